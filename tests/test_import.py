"""keras_qat imports and works whichever Keras the user's interpreter touched first."""

import subprocess
import sys

import pytest

SCRIPT = """
import tensorflow as tf
{before}
import keras_qat
from keras_qat._keras import keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
config = {{"d": {{"retrain_data_config": {{"clip_max": 1.0, "clip_min": -1.0}}}}}}
qat = keras_qat.apply_retrain_config(model, config)
print(type(qat).__module__.split(".")[0])
"""


@pytest.mark.parametrize(
    "before",
    [
        pytest.param("", id="fresh"),
        # A fresh interpreter costs ~15 s: the other orders run with the slow tests.
        pytest.param("import keras", id="keras3-imported", marks=pytest.mark.slow),
        pytest.param("tf.keras.layers.Dense", id="tf.keras-touched", marks=pytest.mark.slow),
        pytest.param(
            "import os; os.environ['TF_USE_LEGACY_KERAS']='1'",
            id="legacy-env",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_import_in_a_fresh_interpreter(before):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(before=before)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "tf_keras"
