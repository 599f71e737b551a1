"""The .tflite's requantizations, for a quantizer reading another one's grid or an op's sums.

Where a quantized layer reads a tensor the file already holds as int8 on
another grid, the file converts it with a `QUANTIZE` op instead of rounding
a float: a narrower reader of a tensor that a wider quantizer rounds (the
INT4 convolutions beside an INT8 average pooling in AMCT's INT4 recipe),
and any reader of a quantized average pooling's output (an int8
`AVERAGE_POOL_2D` writes on its input's grid). Its arithmetic is not the
fake-quant op's:

- XNNPACK, which runs the `QUANTIZE`, multiplies the level by
  `m / 256`, `m = lrintf(256 * s_in / s_out)`: an 8-bit multiplier, off the
  scale ratio by up to 1/512, and adds half before an arithmetic shift
  (half up);
- LiteRT's built-in int8 `AVERAGE_POOL_2D` (the XNNPACK of ai-edge-litert
  2.3 declines int8 pooling) rounds the sum of the raw int8 values (zero point included) over the
  window's valid positions half away from zero.
- LiteRT's built-in int8 `RELU`, which requantizes where its input and
  output scales differ (a ReLU after a Concatenate, which the converter
  does not fuse; the file ran it outside XNNPACK), multiplies in fixed
  point (`QuantizeMultiplier`, `MultiplyByQuantizedMultiplier`): for a
  ratio below 1 the level times a 31-bit multiplier is rounded to an
  integer first, then shifted right with rounding, so an int8 level
  keeps only a few fractional bits and rounds twice (at ratio 0.139, 0.625
  above an integer already rounds up).

- XNNPACK's convolutions, depthwise convolutions, fully connected ops and
  `MEAN` requantize their int32 sums (the bias included) in float32:
  `rint(float(sum) * ratio)`, half to even, the ratio the float32 quotient
  of the scales (`accumulator_requantize`; `mean_requantize` scales the
  input zero points' share of a `MEAN`'s sum apart). A fake-quant
  of the float sum (divided by the output step, half up) parts from it on
  ties and within float32 error of one (0.02 % of ResNet50's first block
  outputs), and such differences compound with depth.

- XNNPACK's int8 `ADD` scales each input's levels by a fixed-point
  multiplier of about 21 bits (`lrintf` of the float32 scale ratio times
  `2^shift`, the shift set by the larger ratio), adds half of `2^shift` and
  shifts right (floor): half up, on multipliers off the ratios by up to
  2^-21 of the larger (`add_requantize`; `SUB` negates one multiplier,
  `subtract_requantize`); its `MUL` requantizes the product
  of the levels as a convolution its sums (`multiply_requantize`).

- XNNPACK's int8 `RESIZE_BILINEAR` interpolates the levels with 11-bit
  weights and rounds half up onto its input's grid
  (`resize_bilinear_levels`); LiteRT's built-in kernel, which runs an
  output size computed when the model runs, with 10-bit weights, half
  away from zero (`builtin_resize_bilinear_levels`).

- XNNPACK's `QUANTIZE` of a float tensor (a model input) multiplies it by
  the float32 reciprocal of the scale and rounds half to even
  (`float_quantize`), where the fake-quant subtracts the range's low end
  first and rounds half up: on a barely trained ResNet50 at 64x64, 3 of
  588 000 input values a step apart, which grew to a fifth of the last
  block's outputs.

`pooled_levels` and `file_requantize` compute them in float32, exactly while the levels and
`m * level` stay below 2^24 (int8 levels do); `relu_requantize` in float64,
exact while the level times the multiplier stays below 2^53.
"""

import numpy as np
import tensorflow as tf

from keras_qat.quantizers.ranges import divided

# A sum over a pooling window divided by its size is a tie only at a
# fraction of exactly 1/2; the next fractions lie 1 / (2 * size) away. This
# margin absorbs float32 error in the Keras average and holds for windows up
# to 500 positions.
_TIE_MARGIN = 1e-3


def op_grid(clip_min, clip_max, num_bits):
    """The fake-quant op's grid over [clip_min, clip_max], in TensorFlow (as `ranges.op_nudge`).

    Args:
        clip_min: Scalar lower bound (<= 0); the grid is computed in float32.
        clip_max: Scalar upper bound (> clip_min).
        num_bits: Bit width.

    Returns:
        `(scale, zero_point, low)` as float32 scalar tensors: the step, the
        level of 0 and the nudged lower bound.
    """
    clip_min = tf.convert_to_tensor(clip_min, tf.float32)
    clip_max = tf.convert_to_tensor(clip_max, tf.float32)
    levels = float(2**num_bits - 1)
    scale = divided(clip_max - clip_min, levels)
    zero_point = tf.floor(tf.clip_by_value(0.0 - clip_min / scale, 0.0, levels) + 0.5)
    return scale, zero_point, -zero_point * scale


def pooled_levels(values, scale, zero_point):
    """The levels an int8 average pooling writes, from the Keras average of grid values.

    Args:
        values: The average pooling's output in the QAT model (averages of
            values on the grid).
        scale: The grid's step.
        zero_point: The grid's level of 0 (0 to 2^b - 1).

    Returns:
        The levels above the zero point (float32 integers): the raw int8
        average (`zero_point - 128` is the int8 zero point) rounded half
        away from zero.
    """
    raw = values / scale + (zero_point - 128.0)
    rounded = tf.sign(raw) * tf.floor(tf.abs(raw) + (0.5 + _TIE_MARGIN))
    return rounded - (zero_point - 128.0)


def file_requantize(levels, in_scale, out_grid, num_bits):
    """XNNPACK's int8-to-int8 `QUANTIZE` of `levels` on step `in_scale`, onto `out_grid`.

    Args:
        levels: Float32 integers: the input's levels above its zero point.
        in_scale: The input grid's step.
        out_grid: `op_grid(...)` of the output grid.
        num_bits: The output grid's bit width (an INT4 grid rides an int8
            carrier capped at its top).

    Returns:
        The output values, computed as the fake-quant op writes them
        (`level * scale + low`).
    """
    multiplier = tf.round(256.0 * (in_scale / out_grid[0]))  # lrintf: half to even
    return _eight_bit_multiplied(levels, multiplier, out_grid, num_bits)


def _eight_bit_multiplied(levels, multiplier, out_grid, num_bits):
    """XNNPACK's `(level * m + 128) >> 8` (half up), on `out_grid` (`on_grid`)."""
    return on_grid(tf.floor((levels * multiplier + 128.0) / 256.0), out_grid, num_bits)


def float_quantize(values, out_grid, num_bits):
    """XNNPACK's `QUANTIZE` of float32 `values` onto `out_grid`: `rint(x * f32(1 / scale))`.

    Args:
        values: Float32 tensor.
        out_grid: `op_grid(...)` of the output grid.
        num_bits: The output grid's bit width.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    return on_grid(tf.round(values * (1.0 / out_grid[0])), out_grid, num_bits)


def accumulator_requantize(accumulators, step, out_grid, num_bits):
    """XNNPACK's requantization of a conv or dense op's int32 accumulators onto `out_grid`.

    Args:
        accumulators: Float32 integers: the sums with the bias, in units of `step`.
        step: The accumulator's step, `input scale * weight scale` (float32).
        out_grid: `op_grid(...)` of the output grid.
        num_bits: The output grid's bit width.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    multiplier = divided(step, out_grid[0])
    # multiply_no_nan: Grappler would reassociate a product of levels times the
    # ratio, and the float32 result then differs from the file's near ties.
    return on_grid(tf.round(tf.math.multiply_no_nan(accumulators, multiplier)), out_grid, num_bits)


def mean_requantize(sums, in_grid, count, out_grid, num_bits):
    """XNNPACK's int8 `MEAN` of `count` levels on `in_grid`, onto `out_grid`.

    XNNPACK sums the raw int8 values, zero point included, and scales the
    sum and the zero points' share apart, in float32, before it rounds:
    `rint(f(raw) * m + f(-n * z) * m)`, `m = f(s_in / s_out) * f(1 / n)`.
    A product near a tie may round the other way than the exact sum of the
    levels would (on a digits CNN: 5 of 4 752 outputs).

    Args:
        sums: Float32 integers: the sums of the levels above the input's zero point.
        in_grid: `op_grid(...)` of the input grid (8 bits, or an INT4
            grid's int8 carrier: the same zero point).
        count: How many levels each sum adds.
        out_grid, num_bits: As for `file_requantize`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    in_scale, zero_point, _ = in_grid
    multiplier = divided(in_scale, out_grid[0]) * (np.float32(1) / np.float32(count))
    offset = float(count) * (zero_point - 128.0)  # the int8 zero points' share of the sum
    # multiply_no_nan: Grappler would hoist a common factor out of two Muls.
    raw = tf.math.multiply_no_nan(sums + offset, multiplier)
    return on_grid(tf.round(raw + (-offset) * multiplier), out_grid, num_bits)


def multiply_requantize(levels_a, step_a, levels_b, step_b, out_grid, num_bits):
    """XNNPACK's int8 `MUL` of levels on steps `step_a` and `step_b`, onto `out_grid`.

    The product of the levels is an int32 sum of one term on the step
    `step_a * step_b`, requantized in float32 (`accumulator_requantize`).

    Args:
        levels_a: Float32 integers: the first input's levels above its zero point.
        step_a: The first input's step.
        levels_b, step_b: The same for the second input.
        out_grid, num_bits: As for `file_requantize`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    return accumulator_requantize(levels_a * levels_b, step_a * step_b, out_grid, num_bits)


def _power_of_two(exponent):
    """`2^exponent` as an exact float64 tensor, for an int32 tensor `exponent` (-1022 to 1023)."""
    return tf.bitcast(tf.bitwise.left_shift(tf.cast(exponent, tf.int64) + 1023, 52), tf.float64)


def add_requantize(levels_a, step_a, levels_b, step_b, out_grid, num_bits):
    """XNNPACK's int8 `ADD` of levels on steps `step_a` and `step_b`, onto `out_grid`.

    XNNPACK's `xnn_init_qs8_add_minmax_scalar_params`: each ratio of scales
    `r = float32(s_in / s_out)` becomes the integer `lrintf(r * 2^shift)`
    with `shift = 20 - exponent(max(r_a, r_b))`; the output level is the
    sum of the two products plus `2^(shift - 1)`, shifted right by `shift`.

    Args:
        levels_a, step_a, levels_b, step_b, out_grid, num_bits: As for
            `multiply_requantize`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    ratio_a, ratio_b = divided(step_a, out_grid[0]), divided(step_b, out_grid[0])
    largest = tf.bitcast(tf.maximum(ratio_a, ratio_b), tf.int32)
    shift = 20 - (tf.bitwise.right_shift(largest, 23) - 127)

    def multiplier(ratio):
        # The ratio times 2^shift: its exponent bits raised by shift, exact.
        raised = tf.bitcast(ratio, tf.int32) + tf.bitwise.left_shift(shift, 23)
        scaled = tf.bitcast(raised, tf.float32)
        return tf.cast(tf.round(scaled), tf.float64)  # lrintf: half to even

    # Products below 2^30, exact in float64, as XNNPACK's int32 sum.
    total = (
        multiplier(ratio_a) * tf.cast(levels_a, tf.float64)
        + multiplier(ratio_b) * tf.cast(levels_b, tf.float64)
        + _power_of_two(shift - 1)
    )
    levels = tf.floor(total / _power_of_two(shift))
    return on_grid(tf.cast(levels, tf.float32), out_grid, num_bits)


def subtract_requantize(levels_a, step_a, levels_b, step_b, out_grid, num_bits):
    """XNNPACK's int8 `SUB`: its `ADD` (`add_requantize`) with the second multiplier negated.

    XNNPACK subtracts with the add's arithmetic on the negated second scale
    (`lrintf` rounds half to even, symmetrically): the same as adding the
    negated levels.

    Args:
        levels_a, step_a, levels_b, step_b, out_grid, num_bits: As for
            `add_requantize`; the result is `a - b`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    return add_requantize(levels_a, step_a, -levels_b, step_b, out_grid, num_bits)


def _interpolation(size, output_size):
    """XNNPACK's source indices and 11-bit weights for resizing `size` values to `output_size`.

    XNNPACK's `resize_bilinear2d_hwc_q11` indirection, in float32 as it
    computes it: half-pixel centres, output `o` reads `o * s + (s / 2 - 1/2)`
    with `s = size / output_size`, clamped to the edges; the weight of the
    upper neighbour is `lrintf(2048 * fraction)`. Each product and sum is
    its own TensorFlow op, rounded to float32 apart, as XNNPACK's C does
    (TensorFlow fuses no float multiply-add), so a size known only when
    the model runs (an image of any size) is computed alike.

    Args:
        size: The input's height or width, an integer or a scalar tensor.
        output_size: The output's, likewise.

    Returns:
        `(lower, upper, weights)`: int32 source indices, and the upper
        neighbour's weights as float64 integers.
    """
    last = tf.cast(size, tf.float32) - 1.0
    scale = tf.cast(size, tf.float32) / tf.cast(output_size, tf.float32)
    offset = 0.5 * scale - 0.5
    positions = tf.range(tf.cast(output_size, tf.float32)) * scale + offset
    positions = tf.clip_by_value(positions, 0.0, last)
    lower = tf.cast(positions, tf.int32)
    upper = tf.minimum(lower + 1, tf.cast(last, tf.int32))
    weights = tf.round((positions - tf.cast(lower, tf.float32)) * 2048.0)  # half to even
    return lower, upper, tf.cast(weights, tf.float64)


def spatial_size(tensor):
    """The height and width of a `(batch, height, width, channels)` tensor, each an int if known.

    Args:
        tensor: A 4-D tensor, channels last.

    Returns:
        `(height, width)`: Python integers where the static shape has them,
        else scalar int32 tensors.
    """
    dynamic = tf.shape(tensor)
    return tuple(
        dynamic[axis] if tensor.shape[axis] is None else tensor.shape[axis] for axis in (1, 2)
    )


def resize_bilinear_levels(levels, output_size):
    """XNNPACK's int8 `RESIZE_BILINEAR` (half-pixel centres) of `levels` to `output_size`.

    XNNPACK's `s8-ibilinear` kernel: along the width, then the height,
    `v_0 * 2^11 + (v_1 - v_0) * w` with 11-bit weights `w`; the sum, on
    2^22, is shifted right after adding 2^21 (half up). The op keeps the
    input's scale: with the zero point, the levels shift alike.

    Args:
        levels: `(batch, height, width, channels)` float32 integers, levels
            above the grid's zero point; height and width known, or not
            before the model runs.
        output_size: `(height, width)` of the output, integers or scalar
            tensors (`spatial_size`).

    Returns:
        The interpolated levels, float32 integers (exact in float64: sums
        below 2^31).
    """
    height, width = spatial_size(levels)
    rows, columns = _interpolation(height, output_size[0]), _interpolation(width, output_size[1])
    total = _interpolated(tf.cast(levels, tf.float64), rows, columns, 2048.0)
    return tf.cast(tf.floor((total + 2.0**21) / 2.0**22), tf.float32)


def _interpolated(values, rows, columns, unit):
    """`values` interpolated along the width, then the height, in integers on `unit`^2.

    Args:
        values: `(batch, height, width, channels)` float64 integers.
        rows: `(lower, upper, weights)` along the height (`_interpolation`,
            `_builtin_interpolation`), the upper neighbour's weights on `unit`.
        columns: The same along the width.
        unit: The weights' one: `lower * unit + (upper - lower) * weight`.

    Returns:
        The float64 sums on `unit`^2, exact (below 2^53).
    """
    top, bottom, vertical = rows
    left, right, horizontal = columns
    horizontal, vertical = horizontal[:, None], vertical[:, None, None]

    def along_width(lines):
        lower, upper = tf.gather(lines, left, axis=2), tf.gather(lines, right, axis=2)
        return lower * unit + (upper - lower) * horizontal

    upper_rows = along_width(tf.gather(values, top, axis=1))
    lower_rows = along_width(tf.gather(values, bottom, axis=1))
    return upper_rows * unit + (lower_rows - upper_rows) * vertical


def _builtin_interpolation(size, output_size):
    """LiteRT's built-in int8 bilinear indices and 10-bit weights for `size` to `output_size`.

    `ComputeInterpolationValuesInteger` with half-pixel centres, in int32:
    scale `s = (2^10 * size + output_size / 2) / output_size`, output `o`
    at `o * s + s / 2 - 2^9` (C divisions: toward zero), its neighbours
    clamped to the edges.

    Args:
        size: The input's height or width, an integer or a scalar tensor.
        output_size: The output's, likewise.

    Returns:
        `(lower, upper, weights)`: int32 source indices, and the upper
        neighbour's weights on 2^10 as float64 integers (the lower one's is
        `2^10 - weight`; below the first centre the weight is negative).
    """
    size, output_size = tf.cast(size, tf.int32), tf.cast(output_size, tf.int32)
    scale = (1024 * size + output_size // 2) // output_size
    scaled = tf.range(output_size) * scale + scale // 2 - 512
    lower = tf.maximum(tf.truncatediv(scaled, 1024), 0)
    upper = tf.minimum(tf.truncatediv(scaled + 1023, 1024), size - 1)
    return lower, upper, tf.cast(scaled - 1024 * lower, tf.float64)


def builtin_resize_bilinear_levels(levels, zero_point, output_size):
    """LiteRT's built-in int8 `RESIZE_BILINEAR` (half-pixel centres) of `levels` to `output_size`.

    `ResizeBilinearInteger`: the four int8 values weighted on 2^20, then
    divided by 2^20 after adding half of it with the sum's sign (half away
    from zero, on the int8 values themselves: the zero point matters). It
    runs where XNNPACK declines the op: an output size the file computes
    when the model runs.

    Args:
        levels: `(batch, height, width, channels)` float32 integers, levels
            above the grid's zero point.
        zero_point: The grid's level of 0 (0 to 255; `zero_point - 128` is
            the int8 zero point).
        output_size: `(height, width)` of the output, integers or scalar
            tensors (`spatial_size`).

    Returns:
        The interpolated levels above the zero point, float32 integers
        (exact in float64: sums below 2^31).
    """
    offset = tf.cast(zero_point, tf.float64) - 128.0
    height, width = spatial_size(levels)
    rows = _builtin_interpolation(height, output_size[0])
    columns = _builtin_interpolation(width, output_size[1])
    # The kernel's four products, summed: the same integers as along the width, then the height.
    total = _interpolated(tf.cast(levels, tf.float64) + offset, rows, columns, 1024.0)
    rounded = tf.sign(total) * tf.floor((tf.abs(total) + 2.0**19) / 2.0**20)
    return tf.cast(rounded - offset, tf.float32)


def on_grid(levels, grid, num_bits):
    """The values of `levels` on `grid`, clipped to its `num_bits` levels.

    Args:
        levels: Float32 integers: levels above the grid's zero point.
        grid: `op_grid(...)` of the grid.
        num_bits: The grid's bit width.

    Returns:
        The values, as the fake-quant op writes them (`level * scale + low`).
    """
    scale, zero_point, low = grid
    return tf.clip_by_value(levels + zero_point, 0.0, float(2**num_bits - 1)) * scale + low


def quantized_multiplier(ratio):
    """TFLite's `QuantizeMultiplier`: `(q, shift)`, ratio = q * 2^(shift - 31), q a 31-bit integer.

    Args:
        ratio: A positive float64 scalar tensor.

    Returns:
        `(q, shift)` as float64 scalar tensors.
    """
    two = tf.constant(2.0, tf.float64)
    shift = tf.floor(tf.math.log(ratio) / tf.math.log(two)) + 1.0
    fraction = ratio / tf.pow(two, shift)
    # log2 may land one off at a power of two: bring the fraction into [0.5, 1).
    shift += tf.cast(fraction >= 1.0, tf.float64) - tf.cast(fraction < 0.5, tf.float64)
    fraction = ratio / tf.pow(two, shift)
    q = tf.floor(fraction * 2.0**31 + 0.5)
    carry = q >= 2.0**31
    return tf.where(carry, q / 2.0, q), tf.where(carry, shift + 1.0, shift)


# XNNPACK runs an int8 LEAKY_RELU whose scale ratios lie within these bounds
# (in magnitude); outside them LiteRT's built-in kernel does.
_LEAKY_RATIOS = (2.0**-8, 2.0**7)


def leaky_relu_requantize(levels, in_scale, slope, out_grid, num_bits):
    """XNNPACK's int8 `LEAKY_RELU` of `levels` on step `in_scale`, onto `out_grid`.

    It multiplies each level by an 8-bit multiplier, `lrintf(256 * r)`, of
    the ratio `r` of the scales (times the slope below 0, in float32), adds
    half and shifts right: as `file_requantize`, with a multiplier per sign.

    Args:
        levels: Float32 integers: the input's levels above its zero point
            (before the activation).
        in_scale: The input grid's step.
        slope: The activation's slope below 0.
        out_grid, num_bits: As for `file_requantize`.

    Returns:
        `(values, accepted)`: the output values as `file_requantize` gives
        them, and whether XNNPACK takes the op (a bool scalar tensor).
    """
    positive = divided(in_scale, out_grid[0])
    negative = positive * np.float32(slope)
    low, high = _LEAKY_RATIOS
    accepted = tf.logical_and(
        tf.logical_and(positive >= low, positive <= high),
        tf.logical_and(tf.abs(negative) >= low, tf.abs(negative) <= high),
    )
    multiplier = tf.round(256.0 * tf.where(levels >= 0, positive, negative))
    return _eight_bit_multiplied(levels, multiplier, out_grid, num_bits), accepted


def _multiply_by_quantized_multiplier(values, ratio):
    """TFLite's `MultiplyByQuantizedMultiplier` of int32 `values` (float64 integers) by `ratio`.

    `SaturatingRoundingDoublingHighMul` (the product plus or minus 2^30,
    divided by 2^31 towards zero), then `RoundingDivideByPOT` (half away
    from zero), exact in float64 while the product stays below 2^53.
    """
    q, shift = quantized_multiplier(ratio)
    two = tf.constant(2.0, tf.float64)
    product = values * tf.pow(two, tf.maximum(shift, 0.0)) * q
    nudge = tf.constant([1.0 - 2.0**30, 2.0**30], tf.float64)
    nudged = product + tf.gather(nudge, tf.cast(product >= 0, tf.int32))
    high = tf.sign(nudged) * tf.floor(tf.abs(nudged) / 2.0**31)
    right = tf.pow(two, tf.maximum(-shift, 0.0))
    remainder = high - tf.floor(high / right) * right
    threshold = tf.floor((right - 1.0) / 2.0) + tf.cast(high < 0, tf.float64)
    return tf.floor(high / right) + tf.cast(remainder > threshold, tf.float64)


def relu_requantize(levels, in_scale, out_grid, num_bits, ceiling=float("inf")):
    """LiteRT's built-in int8 `RELU` (or `RELU6`) of `levels` on step `in_scale`, onto `out_grid`.

    Args:
        levels: Float32 integers >= 0: the input's levels above its zero
            point, after the ReLU (the file's RELU writes the zero point for
            any level below it).
        in_scale, out_grid, num_bits: As for `file_requantize`.
        ceiling: The activation's ceiling (6 for `RELU6`), which the kernel
            caps the requantized levels at, rounded onto the output step
            (`roundf`). Defaults to none.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    ratio = tf.cast(in_scale, tf.float64) / tf.cast(out_grid[0], tf.float64)
    shifted = _multiply_by_quantized_multiplier(tf.cast(levels, tf.float64), ratio)
    shifted = tf.cast(shifted, tf.float32)
    if ceiling != float("inf"):
        shifted = tf.minimum(shifted, tf.floor(ceiling / out_grid[0] + 0.5))
    return on_grid(shifted, out_grid, num_bits)


def product_requantize(sums, step_a, step_b, out_grid, num_bits):
    """LiteRT's built-in int8 `BATCH_MATMUL` requantization of a product's int32 `sums`.

    The kernel that runs an int8 product whose second input's zero point
    is not 0 (XNNPACK takes the others: `file_arithmetic._FileProduct`).
    It multiplies each sum of products of levels by TFLite's 31-bit
    fixed-point multiplier of `step_a * step_b / output step` (in float64,
    as `GetQuantizedConvolutionMultipler`), rounding twice.

    Args:
        sums: Float32 integers: the sums of the products of the two inputs'
            levels above their zero points (exact below 2^24).
        step_a, step_b: The inputs' steps.
        out_grid, num_bits: As for `file_requantize`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    ratio = tf.cast(step_a, tf.float64) * tf.cast(step_b, tf.float64)
    ratio /= tf.cast(out_grid[0], tf.float64)
    shifted = _multiply_by_quantized_multiplier(tf.cast(sums, tf.float64), ratio)
    return on_grid(tf.cast(shifted, tf.float32), out_grid, num_bits)


def prelu_requantize(levels, in_scale, alpha_levels, alpha_scale, out_grid, num_bits):
    """LiteRT's built-in int8 `PRELU` of `levels` on step `in_scale`, onto `out_grid`.

    A level at or above 0 is requantized by `in_scale / out_scale`, one
    below by the product of it and the alpha's level by
    `in_scale * alpha_scale / out_scale`, each with a 31-bit fixed-point
    multiplier (`_multiply_by_quantized_multiplier`, ratios in float64).

    Args:
        levels: Float32 integers: the input's levels above its zero point.
        in_scale: The input grid's step.
        alpha_levels: Float32 integers: the alpha's int8 levels (zero point 0),
            broadcasting against `levels`.
        alpha_scale: The alpha's step.
        out_grid, num_bits: As for `file_requantize`.

    Returns:
        The output values, as `file_requantize` gives them.
    """
    in_scale = tf.cast(in_scale, tf.float64)
    out_scale = tf.cast(out_grid[0], tf.float64)
    values = tf.cast(levels, tf.float64)
    positive = _multiply_by_quantized_multiplier(values, in_scale / out_scale)
    negative = _multiply_by_quantized_multiplier(
        values * tf.cast(alpha_levels, tf.float64),
        in_scale * tf.cast(alpha_scale, tf.float64) / out_scale,
    )
    written = tf.where(values >= 0, positive, negative)
    return on_grid(tf.cast(written, tf.float32), out_grid, num_bits)
