"""An Add or Multiply of two int8 tensors computes, in inference, the file's int8 op."""

import numpy as np
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import FileAdd, FileMultiply, FileScalarOperation, FileSubtract
from keras_qat.quantizers.tracked import TrackedRangeQuantizer
from tests import reference

L = keras.layers

# The input step; the sum's reader has twice it, the Dense's output half of it:
# sums fall on quarter steps of the reader, and half of them are ties.
STEP = np.float32(0.7) / np.float32(255)
X = (np.arange(256, dtype="f4") * STEP)[:, None]  # every input level


def set_clip(qat, name, clip_max):
    layer = qat.get_layer(name)
    layer.quantizer.assign_clip_range(layer.quantizer_vars, 0.0, clip_max)


def quantized(model, names):
    """`model`'s QAT model (per-tensor weights), its first two layers' inputs on the step STEP."""
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    qat = keras_qat.apply_retrain_config(model, dict.fromkeys(names, per_tensor), X)
    for name in names[:2]:
        set_clip(qat, f"{name}_input_quant", 255 * STEP)
    return qat


def assert_the_file_computes_the_same(qat, path):
    path = keras_qat.export_tflite(qat, path, X)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, X), qat.predict(X, verbose=0), rtol=0, atol=1e-6
    )


def shortcut_model():
    """h + Dense(h): the Add reads the Dense's input quantizer and its tracked output."""
    inputs = keras.Input((1,), name="x")
    hidden = L.Dense(1, use_bias=False, name="stem")(inputs)
    scaled = L.Dense(1, use_bias=False, name="first")(hidden)
    total = L.Add(name="add")([hidden, scaled])
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(total))
    for name, weight in (("stem", 1.0), ("first", 0.75), ("second", 1.0)):
        model.get_layer(name).set_weights([np.array([[weight]], "f4")])
    return model


def test_an_add_writes_the_files_fixed_point_sum_in_inference_and_adds_in_training(tmp_path):
    qat = quantized(shortcut_model(), ("stem", "first", "second"))
    assert isinstance(qat.get_layer("add"), FileAdd)
    first_input, reader = qat.get_layer("first_input_quant"), qat.get_layer("second_input_quant")
    set_clip(qat, "second_input_quant", 2 * 255 * STEP)
    first = qat.get_layer("first")
    TrackedRangeQuantizer.assign_range(first._output_quantizer_vars, 0.0, 255 * STEP / 2)
    probe = keras.Model(qat.input, [first_input.output, first.output, reader.output])

    addend, scaled, got = probe.predict(X, verbose=0)
    step_a, step_b = first_input.grid()[0].numpy(), first.grid()[0].numpy()
    want = reference.xnnpack_add(
        np.round(addend / step_a), step_a, np.round(scaled / step_b), step_b,
        0.0, 2 * 255 * STEP, 8,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert_the_file_computes_the_same(qat, tmp_path / "add.tflite")
    # Training adds in float; the reader's fake-quant rounds the sum.
    addend, scaled, trained = probe(X, training=True)
    total = addend.numpy().astype("f8") + scaled.numpy()
    np.testing.assert_allclose(trained, reference.ulq(total, 0.0, 2 * 255 * STEP, 8), atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(probe(X, training=True)[2])
    grads = tape.gradient(loss, [first.trainable_weights[0], *reader.trainable_weights])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def difference_model():
    """h - 0.6 * swap(h) on two features: every pair of input levels meets in the Subtract."""
    inputs = keras.Input((2,), name="x")
    hidden = L.Dense(2, use_bias=False, name="stem")(inputs)
    swapped = L.Dense(2, use_bias=False, name="swap")(hidden)
    difference = L.Subtract(name="sub")([hidden, swapped])
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(difference))
    model.get_layer("stem").set_weights([np.eye(2, dtype="f4")])
    model.get_layer("swap").set_weights([np.array([[0, 150], [150, 0]], "f4") / 255])
    model.get_layer("second").set_weights([np.ones((2, 1), "f4")])
    return model


def test_a_subtract_writes_the_files_fixed_point_difference(tmp_path):
    # Steps in ratios that are no powers of two: XNNPACK's 21-bit multipliers
    # part from the float difference within 2^-14 of a half step, which
    # hundreds of the 65 536 pairs of levels come that close to.
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256)), -1).reshape(-1, 2)
    inputs = levels.astype("f4") * STEP
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    names = ("stem", "swap", "second")
    qat = keras_qat.apply_retrain_config(
        difference_model(), dict.fromkeys(names, per_tensor), inputs[:256]
    )
    assert isinstance(qat.get_layer("sub"), FileSubtract)
    set_clip(qat, "stem_input_quant", 255 * STEP)
    set_clip(qat, "swap_input_quant", 255 * STEP)
    reader, swap = qat.get_layer("second_input_quant"), qat.get_layer("swap")
    reader.quantizer.assign_clip_range(reader.quantizer_vars, -170 * STEP, 300 * STEP)
    TrackedRangeQuantizer.assign_range(swap._output_quantizer_vars, 0.0, 150 * STEP)
    probe = keras.Model(qat.input, [swap.output, reader.output])
    swapped, got = probe.predict(inputs, verbose=0, batch_size=4096)
    step_b = swap.grid()[0].numpy()
    np.testing.assert_array_equal(np.round(swapped / step_b), levels[:, ::-1])
    clip = (reader.grid()[2].numpy(), reader.grid()[2].numpy() + 255 * reader.grid()[0].numpy())
    want = reference.xnnpack_add(levels, STEP, -levels[:, ::-1], step_b, *clip, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    rounded = reference.ulq(inputs - swapped, *clip, 8)  # the float difference, fake-quantized
    assert np.sum(np.abs(rounded - want) > 1e-7) > 100
    path = keras_qat.export_tflite(qat, tmp_path / "sub.tflite", inputs[:256])
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, inputs),
        qat.predict(inputs, verbose=0, batch_size=4096),
        rtol=0,
        atol=1e-6,
    )


def gate_model():
    """h * sigmoid(Dense(h)): an excitation gate on the LOGISTIC's grid 1/256."""
    inputs = keras.Input((1,), name="x")
    hidden = L.Dense(1, use_bias=False, name="stem")(inputs)
    gate = L.Dense(1, activation="sigmoid", name="gate")(hidden)
    product = L.Multiply(name="excite")([hidden, gate])
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(product))
    model.get_layer("stem").set_weights([np.array([[1.0]], "f4")])
    # Gates of 0.002 to 0.02, levels 1 to 5: most products within the reader's range.
    model.get_layer("gate").set_weights([np.array([[3.0]], "f4"), np.array([-6.0], "f4")])
    model.get_layer("second").set_weights([np.array([[1.0]], "f4")])
    return model


def test_a_multiply_writes_the_files_product_rounded_half_to_even(tmp_path):
    qat = quantized(gate_model(), ("stem", "gate", "second"))
    assert isinstance(qat.get_layer("excite"), FileMultiply)
    shared, reader = qat.get_layer("gate_input_quant"), qat.get_layer("second_input_quant")
    # The reader's step is the input's / 128: the product of levels times 1/2, odd ones ties.
    set_clip(qat, "second_input_quant", 255 * STEP / 128)
    gate = qat.get_layer("gate_activation")
    probe = keras.Model(qat.input, [shared.output, gate.output, reader.output])
    hidden, gated, got = probe.predict(X, verbose=0)
    products = np.round(hidden / STEP) * np.round(gated * 256)
    assert np.any(products % 2 == 1) and np.any(products % 4 == 1)
    want = reference.xnnpack_requantize(products, 0.5, 0.0, 255 * STEP / 128, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert np.mean(products < 510) > 0.5  # not all clipped at the top
    assert_the_file_computes_the_same(qat, tmp_path / "gate.tflite")


def swish_model():
    """Dense(swish): the file's LOGISTIC of the Dense's int8 output, then MUL by that output."""
    inputs = keras.Input((1,), name="x")
    hidden = L.Dense(1, use_bias=False, name="stem")(inputs)
    swished = L.Dense(1, activation="swish", use_bias=False, name="act")(hidden)
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(swished))
    # The Dense's outputs span 4 steps: its level times the logistic's (about
    # 128) stays within the reader's 255 levels.
    for name, weight in (("stem", 1.0), ("act", 4 / 255), ("second", 1.0)):
        model.get_layer(name).set_weights([np.array([[weight]], "f4")])
    return model


def test_swish_writes_the_files_product_of_its_input_and_its_logistic(tmp_path):
    qat = quantized(swish_model(), ("stem", "act", "second"))
    act, reader = qat.get_layer("act"), qat.get_layer("second_input_quant")
    # The Dense's output on the step STEP; the reader's step STEP / 32 makes
    # the product of levels times 1/8: products 4 mod 8 are ties.
    TrackedRangeQuantizer.assign_range(act._output_quantizer_vars, 0.0, 255 * STEP)
    set_clip(qat, "second_input_quant", 255 * STEP / 32)
    probe = keras.Model(qat.input, [act.output, reader.output])
    linear, got = probe.predict(X, verbose=0)
    levels = np.round(linear / act.grid()[0].numpy())
    logistic = np.round(1 / (1 + np.exp(-linear.astype("f8"))) * 256)
    products = levels * logistic
    assert np.any(products % 16 == 4)  # ties to even round down where half up goes up
    want = reference.xnnpack_requantize(products, 0.125, 0.0, 255 * STEP / 32, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert_the_file_computes_the_same(qat, tmp_path / "swish.tflite")


def clip_of(layer):
    """The range of `layer`'s grid (an 8-bit `OutputQuantizeLayer`'s)."""
    scale, _, low = (value.numpy() for value in layer.grid())
    return low, low + 255 * scale


def hard_gate_model():
    """h * relu6(Dense(h) + 3) * (1 / 6): MobileNetV3's excitation gate, two ops with a constant."""
    inputs = keras.Input((1,), name="x")
    hidden = L.Dense(1, use_bias=False, name="stem")(inputs)
    gate = L.ReLU(6.0, name="relu6")(L.Dense(1, name="gate")(hidden) + 3.0) * (1.0 / 6.0)
    product = L.Multiply(name="excite")([hidden, gate])
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(product))
    model.get_layer("stem").set_weights([np.array([[1.0]], "f4")])
    # Dense outputs from -3.5 to 1.2: the gate's sum runs from below 0 to 4.2.
    model.get_layer("gate").set_weights([np.array([[6.7]], "f4"), np.array([-3.5], "f4")])
    model.get_layer("second").set_weights([np.array([[1.0]], "f4")])
    return model


def test_an_add_and_a_multiply_by_a_number_write_the_files_ops(tmp_path):
    qat = quantized(hard_gate_model(), ("stem", "gate", "second"))
    add, scale = [layer for layer in qat.layers if isinstance(layer, FileScalarOperation)]
    assert (add.kind, add.constant, scale.kind) == ("add", 3.0, "multiply")
    gate, shifted = qat.get_layer("gate"), qat.get_layer("relu6_output_quant")
    scaled = qat.get_layer(f"{scale.name}_output_quant")
    probe = keras.Model(qat.input, [gate.output, shifted.output, scaled.output])
    linear, got_sum, got_scaled = probe.predict(X, verbose=0)
    step, (low, high) = gate.grid()[0].numpy(), clip_of(shifted)
    # The constant 3 is level 255 on the step 3 / 255; the fused ReLU6 clamps.
    want_sum = reference.xnnpack_add(
        np.round(linear / step), step, 255, np.float32(3 / 255), low, high, 8
    )
    np.testing.assert_allclose(got_sum, np.maximum(want_sum, 0.0), rtol=0, atol=1e-6)
    sum_step = shifted.grid()[0].numpy()
    products = np.round(got_sum / sum_step) * 255
    ratio = np.float32(sum_step * np.float32(np.float32(1 / 6) / np.float32(255)))
    ratio = ratio / scaled.grid()[0].numpy()
    low, high = clip_of(scaled)
    want_scaled = reference.xnnpack_requantize(products, ratio, low, high, 8)
    np.testing.assert_allclose(got_scaled, want_scaled, rtol=0, atol=1e-6)
    assert len(np.unique(got_scaled)) > 20  # the gate's range is used, not clipped
    assert_the_file_computes_the_same(qat, tmp_path / "hard_gate.tflite")
    # Training adds in float; the output quantizer after the ReLU6 rounds.
    linear, total = keras.Model(qat.input, [gate.output, add.output])(X, training=True)
    np.testing.assert_allclose(total, linear.numpy() + np.float32(3), rtol=0, atol=0)
