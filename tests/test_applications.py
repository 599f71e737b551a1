"""tf_keras.applications families through the whole flow: config, apply, fit, int8 TFLite.

Slow (minutes per family on 2 cores): `python -m pytest -m slow tests/test_applications.py`.
Each network (weights=None, 10 classes) runs twice: at 96x96 with logits,
and at the smallest input the family takes from 64x64 up with its default
softmax classifier. It first trains two float epochs on random images so
that its BatchNormalization statistics are those of a used network, not the
identity of a fresh one (with which activations vanish to ~1e-8 deep in
MobileNetV3 and its outputs to ~1e-10). Both are checked in output steps
(the share of outputs the file computes within one int8 step of Keras): the
outputs of a network trained on random labels lie within a step or two of
each other, so their top-1 says nothing. `benchmarks/fidelity.py` measures
trained networks.
"""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.demo import LOSS

COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
FAMILIES = [
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "ResNet50",
    "EfficientNetB0",
    "DenseNet121",
    "InceptionV3",
    "Xception",
    "NASNetMobile",
]


def int8_compute_fraction(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    compute = [op for op in interpreter._get_ops_details() if op["op_name"] in COMPUTE_OPS]

    def inputs_dtypes(op):
        data_and_weights = (2, 1) if op["op_name"] == "TRANSPOSE_CONV" else (0, 1)
        return {tensors[op["inputs"][i]]["dtype"] for i in data_and_weights}

    int8 = [op for op in compute if inputs_dtypes(op) == {np.int8}]
    return len(int8) / len(compute)


# Families whose outputs are within one step less often, and the share they
# reach (all others: 0.9). EfficientNetB0 (0.85 here, 0.74 of logits exact on
# a trained network): every quantizer rounds where the file does, but rare
# float32-against-int32 ties compound over its 16 blocks, amplified by the
# swish gains and the squeeze's global mean.
KNOWN_GAPS = {"EfficientNetB0": 0.8}


# The smallest input each family takes, from 64 up.
SMALL_SIZES = {"InceptionV3": 75, "Xception": 71}


@pytest.mark.slow
@pytest.mark.parametrize("head", ["logits", "softmax"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_int8(family, head, tmp_path):
    # Each network in a process of its own: the module runs in one process
    # (--dist loadfile), where the networks' memory adds up beyond what
    # clear_session frees (18 GB by the seventeenth).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        int8_fraction, report = pool.submit(_exported, family, head, tmp_path).result()
    assert int8_fraction >= 0.95
    assert report["agreement"] >= KNOWN_GAPS.get(family, 0.9), report


def _exported(family, head, tmp_path):
    """Trains `family` briefly, quantizes, exports: `(int8 compute fraction, check report)`."""
    keras.utils.set_random_seed(0)
    size = 96 if head == "logits" else SMALL_SIZES.get(family, 64)
    head_argument = {"classifier_activation": None} if head == "logits" else {}
    model = getattr(keras.applications, family)(
        input_shape=(size, size, 3), weights=None, classes=10, **head_argument
    )
    rng = np.random.default_rng(0)
    x = rng.random((128, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    loss = LOSS if head == "logits" else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)

    config = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(str(config), model)
    qat = keras_qat.apply_retrain_config(model, str(config), x[:32])
    qat.compile(keras.optimizers.Adam(1e-4), loss)
    qat.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x)
    return int8_compute_fraction(path), keras_qat.check_tflite(qat, path, x, measure="steps")
