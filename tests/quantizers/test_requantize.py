import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import (
    InputQuantizeLayer,
    OutputQuantizeLayer,
    TrackedRangeQuantizer,
    UlqQuantizer,
)
from keras_qat.quantizers.requantize import (
    builtin_resize_bilinear_levels,
    file_requantize,
    leaky_relu_requantize,
    multiply_requantize,
    op_grid,
    pooled_levels,
    prelu_requantize,
    product_requantize,
    relu_requantize,
    resize_bilinear_levels,
)
from tests import reference

# (source clip, source bits, reader clip, reader bits): INT8 onto INT4 (the
# recipe's case), onto a narrower INT8 range, and onto a grid whose zero
# point is not 0, so that values fall below its bottom and above its top.
CASES = [
    ((0.0, 1.4864759), 8, (0.0, 1.1559517), 4),
    ((-1.0, 1.4), 8, (-0.3, 0.95), 8),
    ((-1.0, 1.4), 8, (-0.45, 0.6), 4),
    ((-0.6, 0.8), 4, (-0.5, 0.55), 4),
]


@pytest.mark.parametrize(("source", "source_bits", "reader", "bits"), CASES)
def test_requantize_matches_xnnpacks_integer_convert(source, source_bits, reader, bits):
    zero = reference.zero_point(*source, source_bits)
    levels = np.arange(-zero, 2**source_bits - zero)  # every level of the source grid
    in_scale = op_grid(*source, source_bits)[0]
    got = file_requantize(tf.constant(levels, tf.float32), in_scale, op_grid(*reader, bits), bits)
    want = reference.file_requantize(levels, in_scale.numpy(), *reader, bits)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    # Not the fake-quant op's rounding of the same values: the 8-bit
    # multiplier moves some levels (in the first case, ratio 0.0756 becomes
    # 19/256).
    values = levels * in_scale.numpy()
    if source_bits == 8:
        assert np.any(np.abs(reference.ulq(values, *reader, bits) - want) > 1e-6)


def test_requantize_rounds_a_half_up():
    # Ratio 0.25 exactly (m = 64): levels 2, 6, 10 land on 0.5, 1.5, 2.5.
    grid = op_grid(0.0, 1.5, 4)  # step 0.1
    levels = tf.constant([2.0, 6.0, 10.0, -2.0], tf.float32)
    got = file_requantize(levels, grid[0] / 4, grid, 4)
    np.testing.assert_allclose(got.numpy(), [0.1, 0.2, 0.3, 0.0], atol=1e-6)


# (input step, reader clip, reader bits): NASNet's cell under W4A4 (a
# concatenation's INT8 step onto an INT4 grid, ratio 0.139), a ratio of
# exactly 1/4, and a ratio above 1 (INT8 onto a finer INT8 grid).
RELU_CASES = [
    (0.086012371, (0.0, 9.3067306), 4),
    (None, (0.0, 1.5), 4),
    (0.086033478, (0.0, 12.22553), 8),
]


@pytest.mark.parametrize(("in_scale", "reader", "bits"), RELU_CASES)
def test_relu_requantize_matches_litert_fixed_point(in_scale, reader, bits):
    grid = op_grid(*reader, bits)
    in_scale = grid[0].numpy() / 4 if in_scale is None else np.float32(in_scale)
    levels = np.arange(0, 256)
    got = relu_requantize(tf.constant(levels, tf.float32), in_scale, grid, bits)
    want = reference.litert_relu_requantize(levels, in_scale, *reader, bits)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    # Below a ratio of 1 the level rounds twice: at 1/4, level 1 (0.25 of
    # a step) already writes 1; above 1 it rounds once, as the fake-quant.
    once = reference.ulq(levels * in_scale, *reader, bits)
    assert np.any(np.abs(once - want) > 1e-6) == (bits == 4)


@pytest.mark.parametrize("bits", [4, 8])
def test_relu6_requantize_caps_at_six_on_the_output_step(bits):
    # A reader's grid reaching past 6 (9.3), from a finer step: levels up to
    # 9.3 in, the kernel's cap at roundf(6 / step) out.
    grid = op_grid(0.0, 9.3067306, bits)
    in_scale = np.float32(0.0364)
    levels = np.arange(0, 256)
    got = relu_requantize(tf.constant(levels, tf.float32), in_scale, grid, bits, 6.0)
    want = reference.litert_relu_requantize(levels, in_scale, 0.0, 9.3067306, bits, 6.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert want.max() < 6.4 and want.max() > 5.6


# (input step, reader clip, reader bits, slope): 256 times the ratio a tie
# (32.5, lrintf rounds it to 32; 16.25 below 0), a leaky ReLU read by an
# INT8 convolution (scales of a digits CNN), and a slope of 0.01.
LEAKY_CASES = [
    (0.125 * 0.126953125, (-0.5, 1.375), 4, 0.5),
    (0.019998843, (-2.1916535, 2.1720474), 8, 0.3),
    (0.05, (-1.0, 3.0), 8, 0.01),
]


@pytest.mark.parametrize(("in_scale", "reader", "bits", "slope"), LEAKY_CASES)
def test_leaky_relu_requantize_matches_xnnpack(in_scale, reader, bits, slope):
    levels = np.arange(-128, 128)
    grid = op_grid(*reader, bits)
    got, accepted = leaky_relu_requantize(
        tf.constant(levels, tf.float32), np.float32(in_scale), slope, grid, bits
    )
    want = reference.xnnpack_leaky_relu(levels, in_scale, slope, *reader, bits)
    assert bool(accepted)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    # The fake-quant of the float activation rounds some levels elsewhere.
    activated = np.where(levels >= 0, levels, levels * slope) * np.float32(in_scale)
    assert np.any(np.abs(reference.ulq(activated, *reader, bits) - want) > 1e-6)


def test_leaky_relu_requantize_tells_where_xnnpack_declines():
    grid = op_grid(-1.0, 1.0, 8)
    levels = tf.constant([-3.0, 5.0])
    # Ratio 1 (0.001 below 0: too small), 1 (0.01), 255 (too large).
    cases = [(grid[0], 0.001, False), (grid[0], 0.01, True), (2.0, 0.1, False)]
    for in_scale, slope, taken in cases:
        _, accepted = leaky_relu_requantize(levels, in_scale, slope, grid, 8)
        assert bool(accepted) == taken, (in_scale, slope)


def test_multiply_requantize_in_a_graph_rounds_the_files_float32_product():
    # EfficientNetB0's swish MUL: the product of the levels times the ratio
    # of the steps, in float32. In a tf.function, Grappler reordered the
    # products of the 4-D levels and the scalar ratio (fewer broadcasts),
    # which moved one of these 16 384 values, near a tie, a level
    # (EfficientNetB0 INT8: 15 % of its logits a step off).
    step_a, step_b = np.float32(0.0032595003), np.float32(1 / 256)
    reader = (np.float32(-0.26380292), np.float32(0.26158312))
    rng = np.random.default_rng(0)
    levels_a = rng.integers(-128, 128, size=(4, 8, 8, 64)).astype("f4")
    levels_b = rng.integers(0, 256, size=levels_a.shape).astype("f4")

    # Variables, as a QAT model's steps and ranges are (constants would be folded).
    variable_step, variable_reader = tf.Variable(step_a), [tf.Variable(bound) for bound in reader]

    @tf.function
    def multiplied(a, b):
        out_grid = op_grid(*variable_reader, 8)
        return multiply_requantize(a, variable_step, b, step_b, out_grid, 8)

    got = multiplied(tf.constant(levels_a), tf.constant(levels_b)).numpy()
    ratio = step_a * step_b / op_grid(*reader, 8)[0].numpy()
    want = reference.xnnpack_requantize(levels_a * levels_b, ratio, *reader, 8)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("zero_point", [0, 37, 255])
def test_pooled_levels_round_the_int8_sum_half_away_from_zero(zero_point):
    # 2x2 windows: a sum of raw values that is 2 mod 4 is a tie, rounded
    # away from zero in raw int8, which is not toward +inf on the levels.
    rng = np.random.default_rng(zero_point)
    scale = np.float32(0.0123)
    raw = rng.integers(-128, 128, size=(9, 9))
    values = ((raw - (zero_point - 128)) * scale).astype("f4")
    pooled = keras.layers.AveragePooling2D(2, strides=1)(values[None, :, :, None])
    got = pooled_levels(pooled, scale, float(zero_point)).numpy()[0, :, :, 0]
    want = reference.int8_average_pool(raw, 2) - (zero_point - 128)
    np.testing.assert_array_equal(got, want)
    total = sum(raw[i : i + 8, j : j + 8] for i in range(2) for j in range(2))
    assert np.any(total % 4 == 2) and np.any((total < 0) & (total % 4 == 2))


def quantizer_pair(source_clip, reader_clip, pool):
    inputs = keras.Input((6, 6, 1))
    source = InputQuantizeLayer(UlqQuantizer("INT8", clip_min=source_clip[0],
                                             clip_max=source_clip[1]), name="source")  # fmt: skip
    tensor = source(inputs)
    if pool:
        tensor = keras.layers.AveragePooling2D(2, strides=1)(tensor)
    reader = InputQuantizeLayer(UlqQuantizer("INT4"), name="reader")
    model = keras.Model(inputs, reader(tensor))
    reader.quantizer.assign_clip_range(reader.quantizer_vars, *reader_clip)
    return model, source, reader


def test_a_reader_of_another_quantizers_grid_writes_the_files_values():
    model, source, reader = quantizer_pair((-1.0, 1.4), (-0.45, 0.6), pool=False)
    assert reader.grid_sources == [source]
    x = np.linspace(-1.2, 1.6, 36, dtype="f4").reshape(1, 6, 6, 1)
    in_scale = op_grid(-1.0, 1.4, 8)[0].numpy()
    levels = np.round(reference.ulq(x, -1.0, 1.4, 8) / in_scale).astype(int)
    want = reference.file_requantize(levels, in_scale, -0.45, 0.6, 4)
    np.testing.assert_allclose(model(x).numpy(), want, atol=1e-6)


def test_a_reader_of_a_pooled_grid_and_its_gradients():
    model, source, reader = quantizer_pair((-1.0, 1.4), (-0.45, 0.6), pool=True)
    assert reader.grid_sources == [source]
    x = np.random.default_rng(1).uniform(-1.2, 1.6, (1, 6, 6, 1)).astype("f4")
    in_scale = op_grid(-1.0, 1.4, 8)[0].numpy()
    raw = np.round(reference.ulq(x[0, :, :, 0], -1.0, 1.4, 8) / in_scale).astype(int)
    raw += reference.zero_point(-1.0, 1.4, 8) - 128
    levels = reference.int8_average_pool(raw, 2) - (reference.zero_point(-1.0, 1.4, 8) - 128)
    want = reference.file_requantize(levels, in_scale, -0.45, 0.6, 4)
    np.testing.assert_allclose(model(x).numpy()[0, :, :, 0], want, atol=1e-6)
    # Training computes the same values (no ties here); backward, the
    # reader's quantizer is ULQ on its own input.
    pooled = keras.Model(model.inputs, model.get_layer("reader").input)(x).numpy()
    dy = np.random.default_rng(2).normal(size=pooled.shape).astype("f4")
    with tf.GradientTape() as tape:
        y = model(x, training=True)
    np.testing.assert_allclose(y.numpy()[0, :, :, 0], want, atol=1e-6)
    clip_min, clip_max = reader.quantizer_vars["clip_min"], reader.quantizer_vars["clip_max"]
    grads = tape.gradient(y, [clip_min, clip_max], output_gradients=tf.constant(dy))
    _, want_min, want_max = reference.ulq_gradients(pooled, dy, -0.45, 0.6, 4)
    np.testing.assert_allclose([g.numpy() for g in grads], [want_min, want_max], rtol=1e-4)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_a_reader_of_a_concatenation_requantizes_its_slices_on_grids(kind):
    # DenseNet's pattern: a block's input, held on its reader's grid, joins
    # new features, which the file writes on the concatenation's grid
    # directly; behind a max pooling a grid stays a grid. The reader is an
    # input quantizer (INT4 here), or the output quantizer of a
    # concatenation no quantized layer reads (8 bits over a tracked range).
    inputs = keras.Input((6, 6, 1))
    source = InputQuantizeLayer(UlqQuantizer("INT8", clip_min=-1.0, clip_max=1.4), name="source")
    rounded = source(inputs)
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same")(rounded)
    joined = keras.layers.Concatenate()([rounded, inputs, pooled])
    if kind == "input":
        reader, bits = InputQuantizeLayer(UlqQuantizer("INT4"), name="reader"), 4
    else:
        reader, bits = OutputQuantizeLayer(name="reader"), 8
    model = keras.Model(inputs, [rounded, pooled, reader(joined)])
    if kind == "input":
        reader.quantizer.assign_clip_range(reader.quantizer_vars, -0.45, 0.6)
    else:
        TrackedRangeQuantizer.assign_range(reader.quantizer_vars, -0.45, 0.6)
    assert reader.grid_sources == [source, None, source]
    x = np.random.default_rng(4).uniform(-1.2, 1.6, (2, 6, 6, 1)).astype("f4")
    on_grid, pooled_grid, got = (y.numpy() for y in model(x))
    in_scale = op_grid(-1.0, 1.4, 8)[0].numpy()
    want = [
        reference.file_requantize(np.round(on_grid / in_scale), in_scale, -0.45, 0.6, bits),
        reference.ulq(x, -0.45, 0.6, bits),
        reference.file_requantize(np.round(pooled_grid / in_scale), in_scale, -0.45, 0.6, bits),
    ]
    np.testing.assert_allclose(got, np.concatenate(want, axis=-1), atol=1e-6)


def test_a_reader_behind_a_relu_writes_what_the_files_relu_writes():
    # NASNet's pattern: a concatenation's output quantizer, then a ReLU the
    # converter does not fuse; its RELU op requantizes to the reader's grid.
    inputs = keras.Input((6, 6, 1))
    source = OutputQuantizeLayer(name="source")
    rounded = source(keras.layers.Concatenate()([inputs, inputs]))
    reader = InputQuantizeLayer(UlqQuantizer("INT4"), name="reader")
    model = keras.Model(inputs, [rounded, reader(keras.layers.ReLU()(rounded))])
    TrackedRangeQuantizer.assign_range(source.quantizer_vars, -2.3, 8.6)
    reader.quantizer.assign_clip_range(reader.quantizer_vars, 0.0, 9.3)
    assert reader.grid_sources == [source]
    x = np.random.default_rng(5).uniform(-3.0, 9.0, (2, 6, 6, 1)).astype("f4")
    on_grid, got = (y.numpy() for y in model(x))
    in_scale = op_grid(-2.3, 8.6, 8)[0].numpy()
    levels = np.maximum(np.round(on_grid / in_scale), 0)
    want = reference.litert_relu_requantize(levels, in_scale, 0.0, 9.3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)


def joined_pooling(reader_bits):
    """DenseNet's transition: a pooling read by a layer and joined by a Concatenate."""
    inputs = keras.Input((6, 6, 1))
    source = InputQuantizeLayer(UlqQuantizer("INT8", clip_min=-1.0, clip_max=1.4), name="source")
    pooled = keras.layers.AveragePooling2D(2, strides=1, name="pool")(source(inputs))
    follower = InputQuantizeLayer(UlqQuantizer("INT4"), follows_pooling=True, name="follower")
    followed = follower(pooled)
    grown = keras.layers.Conv2D(1, 1, name="grow")(followed)
    joined = keras.layers.Concatenate()([pooled, grown])
    reader = InputQuantizeLayer(UlqQuantizer(f"INT{reader_bits}"), name="reader")
    model = keras.Model(inputs, [followed, reader(joined)])
    reader.quantizer.assign_clip_range(reader.quantizer_vars, -0.45, 0.6)
    return model


@pytest.mark.parametrize("bits", [8, 4])
def test_a_reader_of_a_joined_pooling_reads_the_concatenations_grid(bits):
    # The file requantizes the pooling's output once, onto the grid of the
    # concatenation (its reader's), and the layer reads that int8 tensor:
    # at INT4 the carrier, which no MINIMUM caps (levels above 0.6 stay).
    model = joined_pooling(bits)
    follower, reader = model.get_layer("follower"), model.get_layer("reader")
    assert follower.followed is reader and not follower.trainable_weights
    x = np.random.default_rng(6).uniform(-1.2, 1.6, (1, 6, 6, 1)).astype("f4")
    x[0, :2, :2], x[0, 3:5, 3:5] = -1.2, 1.6  # windows at the source's bounds
    in_scale = op_grid(-1.0, 1.4, 8)[0].numpy()
    raw = np.round(reference.ulq(x[0, :, :, 0], -1.0, 1.4, 8) / in_scale).astype(int)
    raw += reference.zero_point(-1.0, 1.4, 8) - 128
    levels = reference.int8_average_pool(raw, 2) - (reference.zero_point(-1.0, 1.4, 8) - 128)
    want = reference.file_requantize(levels, in_scale, -0.45, 0.6, bits, top=255)
    got, joined = (y.numpy()[0] for y in model(x))
    np.testing.assert_allclose(got[:, :, 0], want, atol=1e-6)
    assert want.min() < -0.4 and want.max() > (0.7 if bits == 4 else 0.59)
    # The concatenation's reader caps its slice of the same levels.
    capped = reference.file_requantize(levels, in_scale, -0.45, 0.6, bits)
    np.testing.assert_allclose(joined[:, :, 0], capped, atol=1e-6)
    # Backward, the levels pass the gradient through.
    with tf.GradientTape() as tape:
        pooled = tf.constant(x[:, :5, :5])
        tape.watch(pooled)
        y = follower(pooled)
    np.testing.assert_array_equal(tape.gradient(y, pooled).numpy(), np.ones_like(x[:, :5, :5]))


def test_a_loaded_reader_of_a_joined_pooling_follows_the_same_grid(tmp_path):
    model = joined_pooling(4)
    model.save(tmp_path / "m.keras")
    loaded = keras_qat.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("follower").followed is loaded.get_layer("reader")
    x = np.random.default_rng(7).uniform(-1.2, 1.6, (2, 6, 6, 1)).astype("f4")
    for got, want in zip(loaded(x), model(x), strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_a_quantizer_called_on_a_float_tensor_reads_no_grid():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4)(InputQuantizeLayer(UlqQuantizer())(inputs))
    reader = InputQuantizeLayer(UlqQuantizer())
    reader(hidden)
    assert reader.grid_sources == [None]


def test_a_loaded_model_reads_the_same_grid(tmp_path):
    model, _, _ = quantizer_pair((-1.0, 1.4), (-0.45, 0.6), pool=True)
    model.save(tmp_path / "m.keras")
    loaded = keras_qat.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("reader").grid_sources == [loaded.get_layer("source")]
    x = np.random.default_rng(3).uniform(-1.2, 1.6, (2, 6, 6, 1)).astype("f4")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


# (input step, alpha step, reader clip, bits): the negative side's ratio
# exactly 1/4 (products 2 mod 4 are ties, which go away from zero) and the
# positive one 8; the steps of a small CNN's file; an INT4 reader.
PRELU_CASES = [
    (2.0**-5, 2.0**-7, (-(2.0**-10) * 128, 2.0**-10 * 127), 8),
    (0.019872852, 0.00027530326, (-1.7118, 1.7115), 8),
    (0.05, 0.002, (-0.6, 0.9), 4),
]


@pytest.mark.parametrize(("in_scale", "alpha_scale", "reader", "bits"), PRELU_CASES)
def test_prelu_requantize_matches_litert_fixed_point(in_scale, alpha_scale, reader, bits):
    levels, alphas = np.meshgrid(np.arange(-255, 256), [-127, -64, -3, -1, 0, 1, 2, 37, 127])
    grid = op_grid(*reader, bits)
    got = prelu_requantize(
        tf.constant(levels, tf.float32),
        np.float32(in_scale),
        tf.constant(alphas, tf.float32),
        np.float32(alpha_scale),
        grid,
        bits,
    )
    want = reference.litert_prelu(levels, np.float32(in_scale), alphas, np.float32(alpha_scale),
                                  *reader, bits)  # fmt: skip
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    if in_scale == 2.0**-5:  # the ties: not the fake-quant's half up
        value = np.where(levels >= 0, levels, levels * alphas * alpha_scale) * in_scale
        assert np.any(np.abs(reference.ulq(value, *reader, bits) - want) > 1e-6)


# Whole factors (10, 14) ... (25, 21) of a 5 x 7 input; other sizes, larger
# and smaller, whose positions XNNPACK rounds in float32; one pixel.
@pytest.mark.parametrize(
    "size", [(10, 14), (15, 14), (5, 28), (25, 21), (8, 4), (7, 11), (3, 2), (1, 1)]
)
def test_resize_bilinear_levels_match_xnnpacks_fixed_point(size):
    rng = np.random.default_rng(0)
    levels = rng.integers(-255, 256, (2, 5, 7, 3)).astype("f4")
    levels[0, :2, :2] = [[[1, 0, 255]] * 2, [[0, 0, -255]] * 2]  # 9/16, and the extremes
    got = resize_bilinear_levels(tf.constant(levels), size).numpy()
    want = reference.xnnpack_resize_bilinear(levels, size)
    np.testing.assert_array_equal(got, want)
    if size == (10, 14):  # ties (eighths of a level): half up, where rint goes to even
        interpolated = tf.image.resize(levels, size, "bilinear").numpy()
        assert np.any(np.rint(interpolated) != want)


@pytest.mark.parametrize("size", [(15, 14), (8, 4), (7, 11)])
def test_the_resize_reference_is_what_litert_runs(size):
    from ai_edge_litert.interpreter import Interpreter

    @tf.function(input_signature=[tf.TensorSpec([1, 5, 7, 3], tf.float32)])
    def resize(x):
        return tf.image.resize(x, size, "bilinear")

    rng = np.random.default_rng(1)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [resize.get_concrete_function()], resize
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, 5, 7, 3)).astype("f4")] for _ in range(8)
    )
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    raw = rng.integers(-128, 128, (1, 5, 7, 3)).astype(np.int8)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], raw)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(got, reference.xnnpack_resize_bilinear(raw, size))


# Up by two (the UpSampling2D case, first centres below 0), and other sizes;
# zero points off the middle: the built-in kernel rounds the int8 values
# half away from zero, so the zero point moves its ties.
@pytest.mark.parametrize("size", [(10, 14), (15, 14), (8, 4), (3, 2), (1, 1)])
@pytest.mark.parametrize("zero_point", [128.0, 0.0, 201.0])
def test_builtin_resize_bilinear_levels_match_litert_s_integer_kernel(size, zero_point):
    rng = np.random.default_rng(0)
    raw = rng.integers(-128, 128, (2, 5, 7, 3))
    raw[0, :2, :2] = [[[1, 0, 127]] * 2, [[0, -1, -128]] * 2]  # ties, and the extremes
    levels = tf.constant(raw - (zero_point - 128.0), tf.float32)
    got = builtin_resize_bilinear_levels(levels, zero_point, size).numpy()
    want = reference.builtin_resize_bilinear(raw, size) - (zero_point - 128.0)
    np.testing.assert_array_equal(got, want)
    if size == (10, 14) and zero_point == 128.0:
        assert np.any(want != reference.xnnpack_resize_bilinear(raw, size))


@pytest.mark.parametrize("size", [(5, 7), (8, 4)])
def test_the_builtin_resize_reference_is_what_litert_runs_for_a_size_computed_in_the_file(size):
    from ai_edge_litert.interpreter import Interpreter

    # An UpSampling2D of an image of any size: the file computes the output
    # size (SHAPE, SLICE, MUL), which XNNPACK declines.
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.UpSampling2D(2, interpolation="bilinear")(inputs))
    rng = np.random.default_rng(1)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, *size, 3)).astype("f4")] for _ in range(8)
    )
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = Interpreter(model_content=converter.convert())
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [2, *size, 3])
    interpreter.allocate_tensors()
    raw = rng.integers(-128, 128, (2, *size, 3)).astype(np.int8)
    interpreter.set_tensor(index, raw)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(
        got, reference.builtin_resize_bilinear(raw, (2 * size[0], 2 * size[1]))
    )


@pytest.mark.parametrize("reader_bits", [8, 4])
def test_a_reader_of_an_embeddings_rows_writes_the_files_quantize(tmp_path, reader_bits):
    # The file gathers the rows as int8 on the table's step and QUANTIZEs
    # them onto the reader's grid: an 8-bit multiplier, 19/256 for a ratio
    # of 0.0756 (1.9 % off), where a fake-quant of the rows rounds exactly.
    step = np.float32(0.0756) * np.float32(0.8) / np.float32(255)
    rows = np.arange(-127, 128)
    inputs = keras.Input((1,), dtype="int32", name="token")
    table = keras.layers.Embedding(len(rows), 1, name="embed")
    rows_read = keras.layers.Flatten(name="flat")(table(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(rows_read))
    table.set_weights([(rows * step).astype("f4")[:, None]])
    tokens = np.arange(len(rows))[:, None].astype("int32")
    head = {"retrain_data_config": {"dst_type": f"INT{reader_bits}"}}
    qat = keras_qat.apply_retrain_config(model, {"embed": {}, "head": head}, tokens)
    reader = qat.get_layer("head_input_quant")
    reader.quantizer.assign_clip_range(reader.quantizer_vars, -0.4, 0.4)
    assert reader.grid_sources == [qat.get_layer("embed")]
    in_scale = qat.get_layer("embed").grid()[0].numpy()
    got = keras.Model(qat.input, reader.output)(tokens).numpy()[:, 0]
    want = reference.file_requantize(rows, in_scale, -0.4, 0.4, reader_bits)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.any(np.abs(reference.ulq(rows * step, -0.4, 0.4, reader_bits) - want) > 1e-6)
    path = keras_qat.export_tflite(qat, tmp_path / "embed.tflite", tokens)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, tokens), qat.predict(tokens, verbose=0), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(("reader", "bits"), [((-3.0, 3.0), 8), ((-1.2, 0.9), 4)])
@pytest.mark.parametrize("tied", [True, False])
def test_product_requantize_matches_litert_batch_matmul(reader, bits, tied):
    """Sums of products of levels, onto the reader's grid with TFLite's fixed-point multiplier.

    At a ratio of 1/4 a sum 2 (mod 4) off a multiple is a tie, which the
    built-in kernel rounds away from zero (float rounding: to even).
    """
    grid = op_grid(*reader, bits)
    out_step = grid[0].numpy()
    step_a, step_b = (out_step / 8, np.float32(2.0)) if tied else (np.float32(0.0137), 0.0211)
    rng = np.random.default_rng(3)
    levels_a = rng.integers(-128, 128, (3, 5, 16))
    levels_b = rng.integers(-128, 128, (3, 16, 7))
    levels_b[0, :, 0] = 0  # all-zero sums
    sums = tf.matmul(tf.constant(levels_a, tf.float32), tf.constant(levels_b, tf.float32))
    got = product_requantize(sums, step_a, step_b, grid, bits)
    want = reference.litert_batch_matmul(levels_a, step_a, levels_b, step_b, *reader, bits)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    if tied:
        remainders = np.matmul(levels_a, levels_b) % 4
        assert (remainders == 2).any()
