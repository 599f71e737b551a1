"""load_model: QAT models back without quantize_scope, and no code run from a file unasked."""

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.cli import main
from keras_qat.demo import build_demo_model


@pytest.fixture(scope="module")
def lambda_files(tmp_path_factory):
    """One model with a Lambda layer, saved in each format tf_keras writes."""
    directory = tmp_path_factory.mktemp("lambda")
    inputs = keras.Input((4,), name="x")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="code")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(doubled))
    paths = [directory / "m.keras", directory / "m.h5", directory / "saved"]
    for path in paths:
        model.save(path)
    return paths


def test_qat_model_reloads_and_resumes(tmp_path):
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    y = np.arange(32) % 10
    qat = keras_qat.apply_retrain_config(build_demo_model(), {"conv1": {}, "logits": {}}, x)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, verbose=0)
    qat.save(tmp_path / "qat.keras")
    with pytest.raises(TypeError):  # what tf_keras does without keras_qat's classes
        keras.models.load_model(tmp_path / "qat.keras")
    reloaded = keras_qat.load_model(tmp_path / "qat.keras", compile=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    reloaded.fit(x, y, initial_epoch=1, epochs=2, verbose=0)  # resumes with its optimizer


@pytest.mark.parametrize("index", [0, 1, 2], ids=["keras", "h5", "savedmodel"])
def test_code_carrying_files_are_refused(lambda_files, index):
    with pytest.raises(keras_qat.ModelFileError, match=r"Lambda.*safe_mode=False"):
        keras_qat.load_model(lambda_files[index])
    model = keras_qat.load_model(lambda_files[index], safe_mode=False)
    assert model.get_layer("code") is not None


@pytest.mark.parametrize("index", [0, 1, 2], ids=["keras", "h5", "savedmodel"])
def test_cli_refuses_code_unless_unsafe(lambda_files, tmp_path, capsys, index):
    config = tmp_path / "c.json"
    assert main(["create-config", str(lambda_files[index]), "-o", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load model") and "--unsafe" in err
    assert not config.exists()
    assert main(["--unsafe", "create-config", str(lambda_files[index]), "-o", str(config)]) == 0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(keras_qat.ModelFileError, match="no such file"):
        keras_qat.load_model(tmp_path / "none.keras")
