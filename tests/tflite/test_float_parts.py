"""What the QAT model computes in float (a front end, disabled layers) is float in the .tflite."""

import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from tests.litert_ops import op_types

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tabular(rng, count):
    """Six raw features spanning 0.1 to 100, three classes by a rule on them."""
    spread = np.array([0.1, 1, 5, 20, 50, 100], np.float32)
    x = rng.normal(size=(count, 6)).astype(np.float32) * spread + 2 * spread
    y = (x[:, 0] / 0.1 + x[:, 3] / 20 - x[:, 5] / 100 > 4).astype(np.int64)
    return x, y + (x[:, 2] / 5 - x[:, 4] / 50 > 0.5)


def test_normalization_inside_the_model_stays_float(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = tabular(np.random.default_rng(0), 2000)
    norm = L.Normalization(name="norm")
    norm.adapt(x)
    inputs = keras.Input((6,), name="features")
    hidden = L.Dense(32, activation="relu", name="d1")(norm(inputs))
    hidden = L.Dense(32, activation="relu", name="d2")(hidden)
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    model.compile("adam", LOSS)
    model.fit(x, y, epochs=10, verbose=0)
    qat = keras_qat.apply_retrain_config(model, {"d1": {}, "d2": {}, "out": {}}, x[:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    # One int8 scale for raw features 0.1 to 100 gave 49-70 % agreement.
    ops = op_types(path)
    assert ("SUB", np.float32) in ops and ("MUL", np.float32) in ops, ops
    assert [dtype for name, dtype in ops if name == "FULLY_CONNECTED"] == [np.int8] * 3
    want, got = qat.predict(x, verbose=0), keras_qat.predict_tflite(path, x)
    assert np.mean(want.argmax(1) == got.argmax(1)) >= 0.99


def test_signal_front_end_runs_in_float(tmp_path):
    # LOG and DIV ahead of the first quantizer: in int8 the DIV failed to
    # invoke (a divisor rounding to the zero point).
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(256, 16))).astype(np.float32) * 1000 + 1e-3
    inputs = keras.Input((16,), name="signal")
    energy = L.Lambda(lambda v: tf.math.log(v + 1.0), name="log")(inputs)
    scale = L.Lambda(lambda v: v / (tf.reduce_max(v, -1, keepdims=True) + 1e-6), name="div")(energy)
    model = keras.Model(inputs, L.Dense(4, name="out")(scale))
    qat = keras_qat.apply_retrain_config(model, {"out": {}}, x)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x)
    ops = op_types(path)
    assert ("DIV", np.float32) in ops and ("LOG", np.float32) in ops, ops
    want, got = qat.predict(x, verbose=0), keras_qat.predict_tflite(path, x)
    assert np.mean(want.argmax(1) == got.argmax(1)) >= 0.99


def test_disabled_layers_compute_in_float(tmp_path, digits):
    # retrain_enable: false leaves a layer float in the QAT model; the file
    # ran it as an int8 op on weights the converter quantized itself.
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(
        x
    )  # disabled, BN folded by TFLite
    x = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(x))
    x = L.Flatten(name="flat")(x)
    x = L.Dense(16, activation="relu", name="d1")(x)
    x = L.Dense(16, activation="relu", name="d2")(x)  # disabled
    model = keras.Model(inputs, L.Dense(10, name="out")(x))
    model.compile("adam", LOSS)
    model.fit(digits[0], digits[1], epochs=3, verbose=0)
    config = {name: {} for name in ("c1", "d1", "out")}
    config.update({name: {"retrain_enable": False} for name in ("c2", "d2")})
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    ops = op_types(path)
    compute = [(name, dtype) for name, dtype in ops if name in ("CONV_2D", "FULLY_CONNECTED")]
    assert compute == [
        ("CONV_2D", np.int8),
        ("CONV_2D", np.float32),
        ("FULLY_CONNECTED", np.int8),
        ("FULLY_CONNECTED", np.float32),
        ("FULLY_CONNECTED", np.int8),
    ], ops
    x = digits[2]
    want, got = qat.predict(x, verbose=0), keras_qat.predict_tflite(path, x)
    assert np.mean(want.argmax(1) == got.argmax(1)) >= 0.99


def test_a_convolution_keras_qat_does_not_quantize_computes_in_float(tmp_path, digits):
    # A SeparableConv1D has no quantizer in the QAT model; the file ran it as
    # int8 ops on weights the converter quantized itself (logits within one
    # step on 87 % of a model like this one, up to 2 steps off).
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv1D(8, 3, activation="relu", name="c1")(L.Reshape((64, 1), name="flat")(inputs))
    x = L.SeparableConv1D(8, 3, padding="same", activation="relu", name="separable")(x)
    x = L.Conv1D(8, 3, activation="relu", name="c2")(x)
    model = keras.Model(inputs, L.Dense(10, name="out")(L.GlobalAveragePooling1D(name="gap")(x)))
    model.compile("adam", LOSS)
    model.fit(digits[0], digits[1], epochs=2, verbose=0)
    qat = keras_qat.apply_retrain_config(model, {"c1": {}, "c2": {}, "out": {}}, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    ops = op_types(path)
    assert ("DEPTHWISE_CONV_2D", np.float32) in ops and ("DEPTHWISE_CONV_2D", np.int8) not in ops
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")["outputs"]["out"]
    # The float ops of the file and of TensorFlow part by float32 error only,
    # which a rounding after them rarely turns into a step.
    assert report["within_one_step"] == 1.0 and report["max_error_steps"] <= 1.01, report


@pytest.mark.parametrize("disabled", ["out", pytest.param("c2", marks=pytest.mark.slow)])
def test_a_layer_left_float_and_its_pooling_compute_in_float(tmp_path, digits, disabled):
    # AMCT's habit of keeping the last layer at full precision ("out"). Its op
    # is named after the signature's output, not the layer: the file ran it
    # as an int8 FULLY_CONNECTED on a representative range (top-1 agreement
    # 0.960, logits 0.35 off), and the global pooling as an int8 MEAN that
    # rounds, which the QAT model does not. Before the pooling ("c2"), the
    # float layer's output was rounded on a representative range (2 steps).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    model = keras.Model(inputs, L.Dense(10, name="out")(L.GlobalAveragePooling2D(name="gap")(x)))
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(digits[0], digits[1], epochs=4, batch_size=64, verbose=0)
    config = {"c1": {}, "c2": {}, "out": {}} | {disabled: {"retrain_enable": False}}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    ops = [op for op in op_types(path) if op[0] != "DELEGATE"]
    compute = [op for op in ops if op[0] in ("CONV_2D", "MEAN", "FULLY_CONNECTED")]
    kinds = {"out": [np.int8, np.int8, np.float32, np.float32],
             "c2": [np.int8, np.float32, np.float32, np.int8]}  # fmt: skip
    assert [dtype for _, dtype in compute] == kinds[disabled], ops
    report = keras_qat.check_tflite(qat, path, digits[2])
    assert report["agreement"] == 1.0 and report["max_abs_error"] < 1e-3, report


@pytest.mark.parametrize("form", ["layer", "activation"])
def test_an_elu_read_through_a_flatten_converts_and_computes_as_trained(tmp_path, digits, form):
    # The converter keeps ELU float; the RESHAPE between it and the Dense's
    # quantizer failed to convert (same-scale constraint against the range it
    # gave the ELU's QUANTIZE). Both are float now, QUANTIZEd at the quantizer.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = L.Conv2D(8, 3, name="conv")(inputs)
    hidden = L.ELU(name="elu")(hidden) if form == "layer" else L.Activation("elu")(hidden)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(hidden)))
    qat = keras_qat.apply_retrain_config(model, {"conv": {}, "logits": {}}, digits[0][:64])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    ops = op_types(path)
    assert ("ELU", np.float32) in ops and ("RESHAPE", np.float32) in ops, ops
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report
