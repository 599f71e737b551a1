import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import BiasQuantizer
from keras_qat.quantizers.wrapper import quantized_variables

L = keras.layers


class FixedStep:
    """A wrapper stand-in whose bias step is a given array."""

    def __init__(self, step):
        self.step = step

    def bias_step(self):
        return self.step


def reference(bias, step):
    """The file's bias: round(b / step) * step, ties to even (TensorFlow's and NumPy's round)."""
    return np.round(bias / step) * step


@pytest.mark.parametrize(
    "step",
    [np.float32(0.25), np.array([0.25, 0.5, 1e-3, 2.0], np.float32)],
    ids=["per-tensor", "per-channel"],
)
def test_bias_is_rounded_to_the_step(step):
    wrapper = FixedStep(step)
    quantizer = BiasQuantizer()
    variables = quantizer.build((4,), "bias", wrapper)
    # Ties at .5 steps (0.125 / 0.25, 0.75 / 0.5), a value on the grid, a large one.
    bias = np.array([0.125, 0.75, 0.0105, -7.0], np.float32)
    got = quantizer(tf.constant(bias), True, variables).numpy()
    np.testing.assert_allclose(got, reference(bias, step), rtol=1e-6)


def test_bias_gradient_is_straight_through():
    quantizer = BiasQuantizer()
    variables = quantizer.build((3,), "bias", FixedStep(np.float32(0.3)))
    bias = tf.Variable([0.1, -0.4, 2.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(quantizer(bias, True, variables) * [1.0, 2.0, 3.0])
    np.testing.assert_allclose(tape.gradient(loss, bias).numpy(), [1.0, 2.0, 3.0])


def test_bias_without_a_step_stays_float():
    quantizer = BiasQuantizer()
    variables = quantizer.build((2,), "bias", FixedStep(None))
    bias = np.array([0.123, -4.56], np.float32)
    np.testing.assert_array_equal(quantizer(tf.constant(bias), True, variables).numpy(), bias)


@pytest.mark.parametrize("dst_type", ["INT8", "INT4"])
def test_qat_model_adds_the_bias_the_file_stores(dst_type):
    # step = input step (the ULQ grid over the clip) * weight step (ARQ:
    # max|w| / qmax), for INT4 kernels / 16: the grid export writes the bias on.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5,))
    hidden = L.Dense(4, name="d")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="next")(hidden))
    bias = np.array([0.3, -0.77, 1.234, 0.0], np.float32)
    model.get_layer("d").bias.assign(bias)
    data = {"clip_min": -2.0, "clip_max": 3.0, "dst_type": "INT8"}
    config = {
        "d": {"retrain_data_config": data, "retrain_weight_config": {"dst_type": dst_type}},
        "next": {"retrain_data_config": data},
    }
    qat = keras_qat.apply_retrain_config(model, config)
    kernel = model.get_layer("d").kernel.numpy()
    qmax, spread = (7, 16) if dst_type == "INT4" else (127, 1)
    step = (3.0 - -2.0) / 255 * (np.abs(kernel).max() / qmax / spread)
    np.testing.assert_allclose(qat.get_layer("d").bias_step().numpy(), step, rtol=1e-5)
    # On a zero input (0 is on the input grid) the layer's output is its bias.
    probe = keras.Model(qat.inputs, qat.get_layer("d").output)
    got = probe.predict(np.zeros((1, 5), np.float32), verbose=0)[0]
    np.testing.assert_allclose(got, reference(bias, step), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, bias, rtol=0, atol=1e-7)  # it is rounded


def test_bias_rounding_survives_save_and_load(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, L.Dense(2, bias_initializer="ones", name="d")(inputs))
    data = {"clip_min": -1.0, "clip_max": 1.0, "dst_type": "INT4"}
    qat = keras_qat.apply_retrain_config(model, {"d": {"retrain_data_config": data}})
    qat.save(tmp_path / "q.keras")
    loaded = keras_qat.load_model(tmp_path / "q.keras")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    np.testing.assert_allclose(
        loaded.get_layer("d").bias_step().numpy(), qat.get_layer("d").bias_step().numpy()
    )


def float32_ties(step, count):
    """Biases whose quotient by `step` is a .5 in float32 and rounds the other way in float64.

    Returns:
        `(biases, float32 units)`: the units NumPy rounds from the float32
        quotient, half to even, as the QAT model does.
    """
    biases = []
    k = 40_000
    while len(biases) < count:
        k += 1
        candidate = np.float32((k + 0.5) * np.float64(step))
        for _ in range(64):
            quotient32 = candidate / step
            exact = np.float64(candidate) / np.float64(step)
            if quotient32 == k + 0.5 and np.round(exact) != np.round(quotient32):
                biases.append(candidate)
                break
            candidate = np.nextafter(candidate, np.float32(np.inf))
    biases = np.array(biases, np.float32)
    return biases, np.round(biases / step)


def test_the_file_holds_the_bias_integers_the_qat_model_adds(tmp_path):
    # The quotient bias / step taken in float64 crosses a .5 the QAT model's
    # float32 one sits on, for about one channel in a thousand: the file's
    # sum is then one unit off in that channel (3 of ResNet50's channels).
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    hidden = L.Dense(4, name="d")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="next")(hidden))
    data = {"clip_min": -2.0, "clip_max": 3.0, "dst_type": "INT8"}
    config = {
        "d": {"retrain_data_config": data, "retrain_weight_config": {"channel_wise": False}},
        "next": {"retrain_data_config": data},
    }
    qat = keras_qat.apply_retrain_config(model, config)
    wrapper = qat.get_layer("d")
    step = np.float32(wrapper.bias_step().numpy())
    biases, units = float32_ties(step, 4)
    quantized_variables(wrapper)[-1].assign(biases)
    # 0 is on the input grid: the layer's output is its bias.
    probe = keras.Model(qat.inputs, wrapper.output)
    np.testing.assert_array_equal(probe(np.zeros((1, 6), np.float32))[0], units * step)

    rng = np.random.default_rng(0)
    representative = rng.uniform(-2.0, 3.0, (32, 6)).astype(np.float32)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", representative)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    (dense,) = [op for op in ops if op["op_name"] == "FULLY_CONNECTED" and op["inputs"][2] >= 0]
    bias = interpreter.get_tensor_details()[dense["inputs"][2]]
    np.testing.assert_allclose(bias["quantization_parameters"]["scales"], [step], rtol=0)
    np.testing.assert_array_equal(interpreter.get_tensor(bias["index"]), units)
