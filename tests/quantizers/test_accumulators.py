"""The file's requantization of an op's int32 sums, computed in the QAT model's forward pass."""

import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import TrackedRangeQuantizer, ranges
from keras_qat.quantizers.requantize import (
    accumulator_requantize,
    add_requantize,
    mean_requantize,
    op_grid,
)
from tests import reference

L = keras.layers


@pytest.mark.parametrize(("clip", "bits"), [((0.0, 255 / 2**12), 8), ((-0.3, 0.45), 4)])
def test_accumulators_round_half_to_even_in_float32(clip, bits):
    grid = op_grid(*clip, bits)
    step = grid[0] / 4  # a ratio of exactly 1/4: sums 2 mod 4 are ties
    sums = np.concatenate([np.arange(-1200, 1200, 1), [2**20, -(2**20)]]).astype("f4")
    got = accumulator_requantize(tf.constant(sums), step, grid, bits).numpy()
    want = reference.xnnpack_requantize(sums, 0.25, *clip, bits)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    # Not the fake-quant's half up, and clipped on both sides.
    assert np.any(np.abs(reference.ulq(sums * step.numpy(), *clip, bits) - want) > 1e-7)
    scale, _, low = (float(v) for v in grid)
    np.testing.assert_allclose(
        [got.min(), got.max()], [low, low + (2**bits - 1) * scale], atol=1e-7
    )


def test_a_mean_requantizes_its_sums_on_the_ratio_over_the_count():
    grid = op_grid(-0.4, 0.6, 8)
    in_grid = op_grid(-0.8, 1.2, 8)  # ratio / count = 2 / 4: odd sums are ties
    sums = np.arange(-700, 700, 1).astype("f4")
    got = mean_requantize(tf.constant(sums), in_grid, 4, grid, 8).numpy()
    want = reference.xnnpack_requantize(sums, 0.5, -0.4, 0.6, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


# Steps of a MEAN in a digits CNN's file, on input zero point -128: the sum
# 225 of 64 levels times the ratio over the count is 10.500009, which the
# file rounds to 10, scaling the raw sum and the zero points' share apart.
IN_STEP, OUT_STEP = np.float32(0.007931273430585861), np.float32(0.002655558055266738)


def test_a_mean_scales_the_raw_sum_and_the_zero_points_share_apart():
    in_grid = op_grid(0.0, 255 * IN_STEP, 8)
    out_grid = op_grid(0.0, 255 * OUT_STEP, 8)
    assert in_grid[0].numpy() == IN_STEP and out_grid[0].numpy() == OUT_STEP
    sums = np.arange(0, 64 * 255, 1).astype("f4")
    mean = tf.function(lambda s: mean_requantize(s, in_grid, 64, out_grid, 8))
    got = mean(tf.constant(sums)).numpy()
    want = reference.xnnpack_mean(sums, IN_STEP, -128, 64, 0.0, 255 * OUT_STEP, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert round(float(got[225] / OUT_STEP)) == 10
    np.testing.assert_array_equal(mean_requantize(sums, in_grid, 64, out_grid, 8).numpy(), got)


def test_a_division_in_a_graph_is_the_exact_quotient():
    # A graph rewrites `x / 255.0` as `x * (1 / 255)`; the file's scales are quotients.
    values = tf.constant(np.random.default_rng(0).random(10000).astype("f4"))
    got = tf.function(lambda: ranges.divided(values, 255.0))().numpy()
    np.testing.assert_array_equal(got, values.numpy() / np.float32(255))
    grid = tf.function(lambda: op_grid(tf.constant(0.0), tf.constant(0.7578685), 8))()
    assert grid[0].numpy() == np.float32(0.7578685) / np.float32(255)


def tie_model(padded=False, rescaled=False, middle=None):
    """First layer, second layer: input step 2^-7, weight steps 2^-7, output steps 2^-12: ratio 1/4.

    The first layer's sums times 1/4 are ties wherever a sum is 2 mod 4;
    its second output channel is 127 times the first, far above the reader's
    top. Dense layers, or (`padded`) 1x1 convolutions of one pixel with
    ResNet's stem between them: padding and a max pooling, which keep the
    first one's sums and their scale. `rescaled`: the model input doubled by
    a `Rescaling` before the first layer. `middle`: between the two Dense
    layers, an "elu" or an identity Dense named "mid" ("dense").
    """
    if padded:
        inputs = keras.Input((1, 1, 1), name="x")
        hidden = L.Conv2D(2, 1, name="first")(inputs)
        hidden = L.MaxPooling2D(2, strides=1, name="pool")(L.ZeroPadding2D(name="pad")(hidden))
        outputs = L.Conv2D(1, 1, name="second")(hidden)
    else:
        inputs = keras.Input((1,), name="x")
        front = L.Rescaling(2.0, name="front")(inputs) if rescaled else inputs
        hidden = L.Dense(2, name="first")(front)
        if middle is not None:
            hidden = (
                L.ELU(name="mid")(hidden) if middle == "elu" else L.Dense(2, name="mid")(hidden)
            )
        outputs = L.Dense(1, name="second")(hidden)
    model = keras.Model(inputs, outputs)
    if middle == "dense":
        model.get_layer("mid").set_weights([np.eye(2, dtype="f4"), np.zeros(2, "f4")])
    first, second = model.get_layer("first"), model.get_layer("second")
    first.set_weights([np.reshape([2**-7, 127 * 2**-7], first.kernel.shape), np.zeros(2, "f4")])
    second.set_weights([np.reshape([1.0, 0.0], second.kernel.shape), np.zeros(1, "f4")])
    return model


def set_clip(model, name, clip_max):
    layer = model.get_layer(f"{name}_input_quant")
    layer.quantizer.assign_clip_range(layer.quantizer_vars, 0.0, clip_max)


@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded_pooled"])
def test_a_reader_of_a_layer_writes_the_files_requantization_of_its_sums(tmp_path, padded):
    model = tie_model(padded)
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    x = np.arange(256, dtype="f4") * 2**-7  # every input level
    x = x.reshape((256, *model.input.shape[1:]))
    qat = keras_qat.apply_retrain_config(model, {"first": per_tensor, "second": per_tensor}, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-12)
    reader = qat.get_layer("second_input_quant")
    got = keras.Model(qat.input, reader.output).predict(x, verbose=0)
    levels = np.arange(256)[:, None] * np.array([1, 127])
    want = reference.xnnpack_requantize(levels, 0.25, 0.0, 255 * 2**-12, 8)
    # Each pooled window holds the pixel and padding (0, on level 0).
    want = np.broadcast_to(want.reshape(len(x), *[1] * (got.ndim - 2), 2), got.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # The file computes the same.
    path = keras_qat.export_tflite(qat, tmp_path / "ties.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), atol=1e-6
    )


def test_a_model_output_a_layer_reads_is_the_files_requantization_of_its_sums(tmp_path):
    """The first layer is a model output too: the file writes it on its reader's grid.

    It requantizes the op's sums there once, ties half up by XNNPACK's
    rule, and dequantizes that tensor for the output; the QAT model
    rounded the float output as the reader's fake-quant does (the ties
    other ways).
    """
    model = tie_model()
    model = keras.Model(model.input, [model.output, model.get_layer("first").output])
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    x = (np.arange(256, dtype="f4") * 2**-7).reshape((256, 1))  # every input level
    qat = keras_qat.apply_retrain_config(model, {"first": per_tensor, "second": per_tensor}, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-12)
    levels = np.arange(256)[:, None] * np.array([1, 127])
    want = reference.xnnpack_requantize(levels, 0.25, 0.0, 255 * 2**-12, 8)
    _, got = qat.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    path = keras_qat.export_tflite(qat, tmp_path / "ties.tflite", x)
    np.testing.assert_allclose(keras_qat.predict_tflite(path, x)["first"], want, atol=1e-6)


def test_a_flattened_per_channel_output_is_requantized_channel_by_channel(tmp_path):
    # Two pixels, two channels with weight steps 2^-9 and 2^-7 (levels 127),
    # flattened for a Dense: ratios 1/16 and 1/4 onto its grid (step 2^-12),
    # alternating along the flattened axis. Sums of 127 * level are ties
    # at 8 mod 16 and 2 mod 4.
    inputs = keras.Input((1, 2, 1), name="x")
    first = L.Conv2D(2, 1, name="first")
    model = keras.Model(inputs, L.Dense(1, name="second")(L.Flatten(name="flat")(first(inputs))))
    first.set_weights([np.reshape([127 * 2**-9, 127 * 2**-7], (1, 1, 1, 2)), np.zeros(2, "f4")])
    model.get_layer("second").set_weights([np.eye(4, 1, dtype="f4"), np.zeros(1, "f4")])
    levels = np.stack([np.arange(256), np.arange(256)[::-1]], axis=1)  # the two pixels
    x = (levels * 2**-7).astype("f4").reshape((256, 1, 2, 1))
    qat = keras_qat.apply_retrain_config(model, {"first": {}, "second": {}}, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-12)
    got = keras.Model(qat.input, qat.get_layer("second_input_quant").output).predict(x, verbose=0)
    sums = np.repeat(levels * 127, 2, axis=1)  # pixel 0 channels 0, 1, pixel 1 channels 0, 1
    want = reference.xnnpack_requantize(sums, np.array([1 / 16, 1 / 4] * 2), 0.0, 255 * 2**-12, 8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    path = keras_qat.export_tflite(qat, tmp_path / "flat.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), atol=1e-6
    )


def test_training_keeps_the_fake_quant_and_its_gradients():
    model = tie_model()
    x = (np.arange(256, dtype="f4") * 2**-7)[:, None]
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    qat = keras_qat.apply_retrain_config(model, {"first": per_tensor, "second": per_tensor}, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-12)
    reader = qat.get_layer("second_input_quant")
    reading = keras.Model(qat.input, reader.output)
    with tf.GradientTape() as tape:
        trained = reading(x, training=True)
        loss = tf.reduce_sum(trained)
    # Half up on the ties, where inference rounds half to even.
    sums = np.arange(256)[:, None] * np.array([1, 127]) * 2**-14
    np.testing.assert_allclose(
        trained.numpy(), reference.ulq(sums, 0.0, 255 * 2**-12, 8), atol=1e-9
    )
    assert np.any(np.abs(trained.numpy() - reading(x, training=False).numpy()) > 1e-6)
    weights = [qat.get_layer("first").trainable_weights[0], *reader.trainable_weights]
    grads = tape.gradient(loss, weights)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert np.any(grads[0].numpy() != 0)


@pytest.mark.parametrize(("clip", "bits"), [((-0.5, 0.7), 8), ((0.0, 0.45), 4)])
def test_an_add_scales_each_input_by_a_fixed_point_multiplier_and_rounds_half_up(clip, bits):
    grid = op_grid(*clip, bits)
    out_step = grid[0].numpy()
    # Ratios 1/2 (odd levels are ties) and 0.37, whose 21-bit multiplier is
    # not exact; sums far beyond both clip bounds.
    scale_a, scale_b = out_step / 2, np.float32(out_step * np.float32(0.37))
    levels_a, levels_b = np.meshgrid(np.arange(-300, 301), np.arange(-300, 301, 7))
    levels_a, levels_b = levels_a.ravel().astype("f4"), levels_b.ravel().astype("f4")
    got = add_requantize(levels_a, scale_a, levels_b, scale_b, grid, bits).numpy()
    want = reference.xnnpack_add(levels_a, scale_a, levels_b, scale_b, *clip, bits)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    # Not the fake-quant of the float sum: ties go up, and the multiplier moves others.
    exact_sum = levels_a * np.float64(scale_a) + levels_b * np.float64(scale_b)
    assert np.any(np.abs(reference.ulq(exact_sum, *clip, bits) - want) > 1e-7)
    low, high, _ = reference.nudged(*clip, bits)
    np.testing.assert_allclose([got.min(), got.max()], [low, high], atol=1e-7)


# A model input, and one a layer rescales before it is quantized (as
# EfficientNet's Rescaling and Normalization do), which stays float in the file.
@pytest.mark.parametrize("rescaled", [False, True], ids=["input", "rescaled"])
def test_a_model_input_is_quantized_as_the_files_quantize_half_to_even(tmp_path, rescaled):
    model = tie_model(rescaled=rescaled)
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    ties = ((np.arange(255, dtype="f4") + 0.5) * 2**-7)[:, None]  # every quantizer input a tie
    x = ties / 2 if rescaled else ties
    qat = keras_qat.apply_retrain_config(model, {"first": per_tensor, "second": per_tensor}, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-7)
    quantized = keras.Model(qat.input, qat.get_layer("first_input_quant").output)
    np.testing.assert_array_equal(quantized.predict(x, verbose=0), np.round(ties * 2**7) * 2**-7)
    # Training keeps the fake-quant's half up (and its gradients).
    half_up = np.floor(ties * 2**7 + 0.5) * 2**-7
    np.testing.assert_array_equal(quantized(x, training=True), half_up)
    path = keras_qat.export_tflite(qat, tmp_path / "ties.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("middle", ["elu", "dense"])
def test_a_reader_of_a_float_layer_quantizes_its_output_half_to_even(tmp_path, middle):
    # The file computes an ELU, or a Dense with retrain_enable: false, in
    # float (DEQUANTIZE, the op, QUANTIZE): the first layer's output on its
    # tracked step 2^-14, positive, kept by the ELU (or the identity Dense),
    # QUANTIZEd onto the reader's step 2^-13; odd levels are ties.
    model = tie_model(middle=middle)
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    config = {"first": per_tensor, "second": per_tensor}
    if middle == "dense":
        config["mid"] = {"retrain_enable": False}
    x = (np.arange(256, dtype="f4") * 2**-7)[:, None]  # every input level
    qat = keras_qat.apply_retrain_config(model, config, x)
    set_clip(qat, "first", 255 * 2**-7)
    set_clip(qat, "second", 255 * 2**-13)
    first = qat.get_layer("first")
    TrackedRangeQuantizer.assign_range(first._output_quantizer_vars, 0.0, 255 * 2**-14)
    quantized = keras.Model(qat.input, qat.get_layer("second_input_quant").output)
    got = quantized.predict(x, verbose=0)[:, 0]
    # The first output channel is level k on step 2^-14 for input level k.
    np.testing.assert_array_equal(got, np.round(np.arange(256) / 2) * 2**-13)
    path = keras_qat.export_tflite(qat, tmp_path / "float.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), rtol=0, atol=1e-6
    )


def test_inference_adds_a_layers_products_as_the_files_integer_sums(tmp_path):
    # 2 048 inputs on a step that is no power of two (levels 0 to 255) and
    # weight levels -127 to 127: summed as float32 values, the products miss
    # the integer sum by up to a step, and near a tie the file's
    # requantization rounds the other way.
    rng = np.random.default_rng(0)
    width, clip_max, weight_step = 2048, 0.8293835, np.float32(0.0123)
    x_levels = rng.integers(0, 256, (64, width))
    w_levels = rng.integers(-127, 128, (width, 16))
    w_levels[0] = 127  # every channel's largest level: its ARQ step is `weight_step`
    inputs = keras.Input((width,), name="x")
    hidden = L.Dense(16, name="first")(inputs)
    model = keras.Model(inputs, L.Dense(1, name="second")(hidden))
    bias = rng.normal(0, 2, 16).astype("f4")
    model.get_layer("first").set_weights([(w_levels * weight_step).astype("f4"), bias])
    config = {"first": {"retrain_weight_config": {"channel_wise": True}}, "second": {}}
    in_step = reference.nudged(0.0, clip_max, 8)[2]
    x = (x_levels * in_step).astype("f4")
    qat = keras_qat.apply_retrain_config(model, config, x)
    set_clip(qat, "first", clip_max)
    set_clip(qat, "second", 60.0)
    first = qat.get_layer("first")
    step = first.accumulator_step().numpy()
    sums = x_levels @ w_levels + np.round(bias / step).astype(np.int64)
    got = first(qat.get_layer("first_input_quant")(x)).numpy()
    np.testing.assert_array_equal(got, sums.astype("f4") * step)
    # The reader requantizes those sums as the file does.
    reader = qat.get_layer("second_input_quant")
    ratio = step / reader.grid()[0].numpy()
    read = keras.Model(qat.input, reader.output).predict(x, verbose=0)
    np.testing.assert_allclose(
        read, reference.xnnpack_requantize(sums, ratio, 0.0, 60.0, 8), rtol=0, atol=1e-6
    )
    path = keras_qat.export_tflite(qat, tmp_path / "sums.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), rtol=0, atol=1e-5
    )
