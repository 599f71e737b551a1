"""Export of models with several inputs or outputs (matched by name) or with integer inputs."""

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras

L = keras.layers


def quantized(model, data):
    config = {layer.name: {} for layer in model.layers if isinstance(layer, L.Dense)}
    return keras_qat.apply_retrain_config(model, config, data)


def output_steps(path):
    """Int8 output scale of each of the file's outputs, by name."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return {name: d["quantization"][0] for name, d in runner.get_output_details().items()}


@pytest.fixture(scope="module")
def two_inputs():
    """Inputs at scales 50 apart, named so that the .tflite orders them unlike Keras."""
    keras.utils.set_random_seed(0)
    small, large = keras.Input((8,), name="input_9"), keras.Input((8,), name="input_10")
    hidden = L.Concatenate()([L.Dense(8, name="a")(small), L.Dense(8, name="b")(large)])
    model = keras.Model([small, large], L.Dense(4, name="out")(hidden))
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(256, 8)), 50 * rng.normal(size=(256, 8))]
    data = [array.astype(np.float32) for array in data]
    return quantized(model, data), data


def test_inputs_are_fed_by_name(two_inputs, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    qat, data = two_inputs
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data, int8_io=True)
    order = [d["name"] for d in Interpreter(model_path=str(path)).get_input_details()]
    assert order == ["serving_default_input_10:0", "serving_default_input_9:0"]  # not Keras's
    report = keras_qat.check_tflite(qat, path, data)
    # Fed by position (calibration and check), the inputs were swapped: error 172.
    assert report["max_abs_error"] <= 2 * output_steps(path)["out"], report
    got = keras_qat.predict_tflite(path, dict(zip(qat.input_names, data, strict=True)))
    np.testing.assert_allclose(got, qat.predict(data, verbose=0), atol=report["max_abs_error"])


def test_predict_tflite_wants_every_input_by_name(two_inputs, tmp_path):
    qat, data = two_inputs
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    with pytest.raises(ValueError, match=r"2 inputs \['input_10', 'input_9'\]: pass a dict"):
        keras_qat.predict_tflite(path, data[0])
    wrong = r"takes inputs \['input_10', 'input_9'\]. Received: \['input_9', 'x'\]"
    with pytest.raises(ValueError, match=wrong):
        keras_qat.predict_tflite(path, {"x": data[0], "input_9": data[1]})


def test_outputs_are_compared_by_name(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = L.Dense(16, activation="relu", name="hidden")(inputs)
    # The .tflite lists its outputs sorted by name: aa_out first.
    outputs = [L.Dense(5, name="zz_out")(hidden), L.Dense(3, name="aa_out")(hidden)]
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    qat = quantized(model, data)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data, int8_io=True)
    report = keras_qat.check_tflite(qat, path, data)
    steps = output_steps(path)
    # The old check took the file's first output, aa_out, for zz_out.
    assert report["agreement"] >= 0.98, report
    assert report["max_abs_error"] <= 2 * max(steps.values()), report
    got, want = keras_qat.predict_tflite(path, data), qat.predict(data, verbose=0)
    assert list(got) == sorted(qat.output_names)
    for name, expected in zip(qat.output_names, want, strict=True):
        np.testing.assert_allclose(got[name], expected, atol=2 * steps[name])


def test_agreement_of_a_sequence_output_is_a_fraction(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 8))
    model = keras.Model(inputs, L.Dense(6, name="tags")(L.Dense(16, activation="relu")(inputs)))
    data = np.random.default_rng(0).normal(size=(64, 10, 8)).astype(np.float32)
    qat = quantized(model, data)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    report = keras_qat.check_tflite(qat, path, data)
    assert report["samples"] == 64
    # One argmax per time step: 640 positions (it read 9.8 when divided by samples).
    assert 0.95 <= report["agreement"] <= 1.0, report


@pytest.mark.parametrize(
    "int8_io",
    [pytest.param(False, id="float-io", marks=pytest.mark.slow), pytest.param(True, id="int8-io")],
)
def test_uint8_image_input(tmp_path, int8_io):
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), dtype="uint8", name="pixels")
    x = L.Conv2D(4, 3, activation="relu", name="conv")(L.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(x)))
    data = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    qat = keras_qat.apply_retrain_config(model, {"conv": {}, "out": {}}, data)
    # The representative data used to be cast to float32, which the converter refused.
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data, int8_io=int8_io)
    (detail,) = Interpreter(model_path=str(path)).get_input_details()
    assert detail["dtype"] == np.uint8
    report = keras_qat.check_tflite(qat, path, data)
    assert report["agreement"] >= 0.98, report


def test_token_id_input(tmp_path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = L.Conv1D(8, 3, activation="relu", name="conv")(L.Embedding(50, 8)(tokens))
    model = keras.Model(tokens, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)))
    data = np.random.default_rng(0).integers(0, 50, (64, 12), dtype=np.int32)
    qat = keras_qat.apply_retrain_config(model, {"conv": {}, "out": {}}, data)
    # Refused by the converter ("expected type INT32") while the data went in as float32.
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    assert keras_qat.check_tflite(qat, path, data)["agreement"] >= 0.98
