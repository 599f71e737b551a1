"""NumPy reference of every keras_qat formula (ARQ, ULQ, weight ULQ, IFMR).

Rounding is half up (floor(v + 0.5)), the rounding of TensorFlow's fake-quant
ops that the quantizers end in.
"""

import numpy as np

MIN_RANGE = 1e-8


def round_half_up(values):
    return np.floor(values + 0.5)


def channels_last(kernel, layout):
    if layout == "depthwise":
        return kernel.reshape(*kernel.shape[:-2], kernel.shape[-2] * kernel.shape[-1])
    if layout == "transpose":
        return np.swapaxes(kernel, -1, -2)
    return kernel


def from_channels_last(values, layout, shape):
    if layout == "depthwise":
        return values.reshape(shape)
    if layout == "transpose":
        return np.swapaxes(values, -1, -2)
    return values


def arq(kernel, bits, channel_wise, layout="last"):
    """ARQ: a = max|w| (per channel), s = a / qmax, clamp(round(w/s)) * s."""
    layout = layout if channel_wise else "last"
    w = channels_last(kernel, layout)
    qmax = 2 ** (bits - 1) - 1
    axes = tuple(range(w.ndim - 1)) if channel_wise else None
    scale = np.maximum(np.abs(w).max(axis=axes), MIN_RANGE) / qmax
    q = np.clip(round_half_up(w / scale), -qmax, qmax) * scale
    return from_channels_last(q, layout, kernel.shape)


def nudged(clip_min, clip_max, bits):
    levels = 2**bits - 1
    scale = (clip_max - clip_min) / levels
    zero_point = round_half_up(np.clip(-clip_min / scale, 0, levels))
    return -zero_point * scale, (levels - zero_point) * scale, scale


def ulq(x, clip_min, clip_max, bits):
    """ULQ forward: asymmetric grid over the nudged range."""
    low, high, scale = nudged(clip_min, clip_max, bits)
    return round_half_up((np.clip(x, low, high) - low) / scale) * scale + low


def ulq_gradients(x, dy, clip_min, clip_max, bits):
    """AMCT's ULQ gradients: (dx, dclip_min, dclip_max)."""
    low, high, scale = nudged(clip_min, clip_max, bits)
    upper, lower = (x > high).astype(float), (x < low).astype(float)
    v = np.where(x > high, clip_max, np.where(x < low, clip_min, x))
    e = (round_half_up(v / scale) - v / scale) / (2**bits - 1)
    return dy * (1 - upper - lower), np.sum(dy * (lower - e)), np.sum(dy * (e + upper))


def ulq_weight(w, scale, bits):
    """Weight ULQ forward on channels-last weights with step `scale`."""
    qmax = 2 ** (bits - 1) - 1
    return np.clip(round_half_up(w / scale), -qmax, qmax) * scale


def ulq_weight_gradients(w, dy, scale, bits, channel_wise):
    """LSQ gradients of weight ULQ: (dw, dscale)."""
    qmax = 2 ** (bits - 1) - 1
    r = w / scale
    inside = np.abs(r) <= qmax
    step = np.where(inside, round_half_up(r) - r, np.sign(r) * qmax)
    axes = tuple(range(w.ndim - 1)) if channel_wise else None
    count = w.size // (w.shape[-1] if channel_wise else 1)
    return np.where(inside, dy, 0.0), np.sum(dy * step, axis=axes) / np.sqrt(count * qmax)


def ifmr(x, bits, fixed_min):
    """IFMR by brute force: one candidate at a time."""
    x = np.asarray(x, np.float64).ravel()
    qmax = 2 ** (bits - 1) - 1
    high = max(np.quantile(x, 0.999999), 0.0)
    low = min(np.quantile(x, 1 - 0.999999), 0.0)
    magnitude = max(high, -low)
    divisor = qmax + 1 if -low > high else qmax
    best = None
    for ratio in [0.70 + 0.01 * i for i in range(61)]:
        c = ratio * magnitude
        s = c / divisor
        error = np.mean((round_half_up(np.clip(x, -c, c) / s) * s - x) ** 2)
        if best is None or error < best[0]:
            best = (error, s)
    step = best[1]
    return qmax * step, 0.0 if fixed_min else -(qmax + 1) * step


def zero_point(clip_min, clip_max, bits):
    low, _, scale = nudged(clip_min, clip_max, bits)
    return int(np.rint(-low / scale))


def file_requantize(levels, in_scale, clip_min, clip_max, bits, top=None):
    """XNNPACK's int8 QUANTIZE in integers: ((level * m + 128) >> 8), m = lrintf(256 * ratio).

    The result is clipped to levels 0 to `top` (default `2**bits - 1`; 255
    for an INT4 grid's uncapped int8 carrier).
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    multiplier = int(np.rint(np.float32(256) * (np.float32(in_scale) / np.float32(scale))))
    shifted = (np.asarray(levels, np.int64) * multiplier + 128) >> 8
    top = 2**bits - 1 if top is None else top
    level = np.clip(shifted + zero_point(clip_min, clip_max, bits), 0, top)
    return level * scale + low


def xnnpack_leaky_relu(levels, in_scale, slope, clip_min, clip_max, bits):
    """XNNPACK's int8 LEAKY_RELU in integers: ((level * m + 128) >> 8), one m per sign.

    m = lrintf(256 * r), r the float32 ratio of the scales, times the
    float32 slope below 0.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    positive = np.float32(in_scale) / np.float32(scale)
    negative = positive * np.float32(slope)
    levels = np.asarray(levels, np.int64)
    multiplier = np.where(
        levels >= 0, np.rint(np.float32(256) * positive), np.rint(np.float32(256) * negative)
    ).astype(np.int64)
    shifted = (levels * multiplier + 128) >> 8
    level = np.clip(shifted + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def _quantize_multiplier(ratio):
    """TFLite's QuantizeMultiplier of a float64 ratio: `(q, shift)`, ratio = q * 2^(shift - 31)."""
    fraction, shift = np.frexp(ratio)
    q = int(np.floor(fraction * 2.0**31 + 0.5))
    if q == 2**31:
        q, shift = q // 2, shift + 1
    return q, int(shift)


def _rounding_divide(values, exponent):
    """gemmlowp's RoundingDivideByPOT: ties away from zero."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (values < 0)
    return (values >> exponent) + ((values & mask) > threshold)


def _multiply_by_quantized_multiplier(values, ratio):
    """TFLite's MultiplyByQuantizedMultiplier of int64 `values`, in C integers (any sign)."""
    q, shift = _quantize_multiplier(np.float64(ratio))
    product = (np.asarray(values, np.int64) << max(shift, 0)) * q
    biased = product + np.where(product >= 0, 2**30, 1 - 2**30)
    high = np.sign(biased) * (np.abs(biased) >> 31)  # C's division: towards zero
    return _rounding_divide(high, max(-shift, 0))


def litert_relu_requantize(levels, in_scale, clip_min, clip_max, bits, ceiling=np.inf):
    """LiteRT's built-in int8 RELU (RELU6: `ceiling` 6) on levels >= 0, in C integers.

    `QuantizeMultiplier` of the scale ratio (31-bit q, shift), then
    `MultiplyByQuantizedMultiplier`: `SaturatingRoundingDoublingHighMul`
    and `RoundingDivideByPOT`; capped at `roundf(ceiling / output scale)`.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    ratio = np.float64(np.float32(in_scale)) / np.float64(scale)
    shifted = _multiply_by_quantized_multiplier(levels, ratio)
    if np.isfinite(ceiling):
        quotient = np.float32(ceiling) / np.float32(scale)
        shifted = np.minimum(shifted, int(np.sign(quotient) * np.floor(np.abs(quotient) + 0.5)))
    level = np.clip(shifted + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def litert_batch_matmul(levels_a, scale_a, levels_b, scale_b, clip_min, clip_max, bits):
    """LiteRT's built-in int8 BATCH_MATMUL of levels above the inputs' zero points, in C integers.

    The int32 sums of products, times the `QuantizeMultiplier` of
    `scale_a * scale_b / output scale` (float64), by
    `MultiplyByQuantizedMultiplier`.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    sums = np.matmul(np.asarray(levels_a, np.int64), np.asarray(levels_b, np.int64))
    ratio = np.float64(np.float32(scale_a)) * np.float64(np.float32(scale_b)) / np.float64(scale)
    shifted = _multiply_by_quantized_multiplier(sums, ratio)
    level = np.clip(shifted + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def litert_prelu(levels, in_scale, alpha_levels, alpha_scale, clip_min, clip_max, bits):
    """LiteRT's built-in int8 PRELU, in C integers.

    The level, or below 0 its product with the alpha's level, times a
    fixed-point multiplier of `in_scale / out` (`in_scale * alpha_scale / out`).
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    f = np.float64
    levels = np.asarray(levels, np.int64)
    positive = _multiply_by_quantized_multiplier(levels, f(in_scale) / f(scale))
    negative = _multiply_by_quantized_multiplier(
        levels * np.asarray(alpha_levels, np.int64), f(in_scale) * f(alpha_scale) / f(scale)
    )
    written = np.where(levels >= 0, positive, negative)
    level = np.clip(written + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def int8_average_pool(raw, window):
    """LiteRT's int8 AVERAGE_POOL_2D on raw int8 values, `window` x `window`, stride 1, valid.

    The sum over the window, divided by its size in C integers: half away from zero.
    """
    raw = np.asarray(raw, np.int64)
    count = window * window
    rows, cols = raw.shape[0] - window + 1, raw.shape[1] - window + 1
    total = sum(raw[i : i + rows, j : j + cols] for i in range(window) for j in range(window))
    return np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))


def xnnpack_requantize(accumulators, multiplier, clip_min, clip_max, bits):
    """XNNPACK's fp32 requantization: `rint(float(acc) * multiplier)`, half to even, in float32.

    `accumulators` are int32 sums (a convolution's, the bias included, or
    a MEAN's) and `multiplier` the float32 scale ratio the kernel was given.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    product = np.asarray(accumulators, np.float32) * np.float32(multiplier)
    level = np.clip(np.rint(product) + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def xnnpack_mean(sums, in_scale, in_zero_point, count, clip_min, clip_max, bits):
    """XNNPACK's int8 MEAN: the raw sum and the zero points' share scaled apart, in float32.

    `rint(f(raw) * m + f(-count * z) * m)`, `m = f(in_scale / out_scale) * f(1 / count)`;
    `sums` are of the levels above the int8 zero point `in_zero_point`.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    f = np.float32
    multiplier = f(f(in_scale) / f(scale)) * (f(1) / f(count))
    raw = np.asarray(sums, np.int64) + count * in_zero_point
    scaled = (raw.astype(f) * multiplier).astype(f) + f(f(-count * in_zero_point) * multiplier)
    level = np.clip(np.rint(scaled) + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def xnnpack_add(levels_a, scale_a, levels_b, scale_b, clip_min, clip_max, bits):
    """XNNPACK's int8 ADD in integers: `(2^(s-1) + m_a l_a + m_b l_b) >> s`.

    `m = lrintf(ratio * 2^s)`, each ratio the float32 quotient of an input
    scale by the output's, and `s = 20 - exponent(max ratio)`; `levels` are
    above each input's zero point.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    ratio_a = np.float32(scale_a) / np.float32(scale)
    ratio_b = np.float32(scale_b) / np.float32(scale)
    _, exponent = np.frexp(max(ratio_a, ratio_b))  # max = mantissa * 2^exponent, in [0.5, 1)
    shift = 20 - (int(exponent) - 1)
    m_a, m_b = (int(np.rint(np.ldexp(r, shift))) for r in (ratio_a, ratio_b))
    total = (1 << (shift - 1)) + m_a * np.asarray(levels_a, np.int64)
    total = total + m_b * np.asarray(levels_b, np.int64)
    level = np.clip((total >> shift) + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low


def _bilinear_axis(size, output_size):
    """XNNPACK's source indices and 11-bit weights resizing `size` values to `output_size`.

    Its C loop, in float32: `x = o * s + (0.5 * s - 0.5)`, `s = size / output_size`,
    clamped to `[0, size - 1]`; left `(int) x`, right one further (clamped),
    weight `lrintf((x - left) * 2048)`.
    """
    f32 = np.float32
    scale = f32(size) / f32(output_size)
    offset = f32(0.5) * scale - f32(0.5)
    low, high, weights = [], [], []
    for o in range(output_size):
        x = min(max(f32(o) * scale + offset, f32(0)), f32(size - 1))
        left = int(x)
        low.append(left)
        high.append(min(left + 1, size - 1))
        weights.append(int(np.rint((x - f32(left)) * f32(2048))))
    return np.array(low), np.array(high), np.array(weights, np.int64)


def xnnpack_resize_bilinear(levels, output_size):
    """XNNPACK's s8 bilinear resize (half-pixel centres) of `(n, h, w, c)` integers, in integers.

    Along the width `(l << 11) + (r - l) * a`, then the height the same on
    those, then `(sum + 2^21) >> 22`.
    """
    values = np.asarray(levels, np.int64)
    top, bottom, vertical = _bilinear_axis(values.shape[1], output_size[0])
    left, right, horizontal = _bilinear_axis(values.shape[2], output_size[1])
    horizontal, vertical = horizontal[:, None], vertical[:, None, None]

    def along_width(rows):
        return (rows[:, :, left] << 11) + (rows[:, :, right] - rows[:, :, left]) * horizontal

    upper, lower = along_width(values[:, top]), along_width(values[:, bottom])
    return ((upper << 11) + (lower - upper) * vertical + (1 << 21)) >> 22


def builtin_resize_bilinear(values, output_size):
    """LiteRT's built-in `ResizeBilinearInteger` (half-pixel centres) of int8 values, in C."""
    values = np.asarray(values, np.int64)
    batch, height, width, channels = values.shape
    out_height, out_width = output_size
    height_scale = ((1 << 10) * height + out_height // 2) // out_height
    width_scale = ((1 << 10) * width + out_width // 2) // out_width

    def interpolation(o, scale, size):
        scaled = o * scale + scale // 2 - (1 << 9)
        lower = max(int(_c_division(np.int64(scaled), 1 << 10)), 0)
        upper = min(int(_c_division(np.int64(scaled + (1 << 10) - 1), 1 << 10)), size - 1)
        return scaled - (lower << 10), lower, upper

    result = np.zeros((batch, out_height, out_width, channels), np.int64)
    for y in range(out_height):
        dy, y0, y1 = interpolation(y, height_scale, height)
        for x in range(out_width):
            dx, x0, x1 = interpolation(x, width_scale, width)
            total = (
                values[:, y0, x0] * ((1 << 10) - dy) * ((1 << 10) - dx)
                + values[:, y1, x0] * dy * ((1 << 10) - dx)
                + values[:, y0, x1] * ((1 << 10) - dy) * dx
                + values[:, y1, x1] * dy * dx
            )
            result[:, y, x] = _c_division(total + np.where(total > 0, 1 << 19, -(1 << 19)), 1 << 20)
    return result


def _int16_multiplier(ratio):
    """`QuantizeMultiplier` of a float32 ratio, then `DownScaleInt32ToInt16Multiplier`."""
    q, shift = _quantize_multiplier(np.float64(ratio))
    return min((q + 2**15) >> 16, 2**15 - 1), shift


def _c_division(numerators, power):
    """C's integer division by a power of two: toward zero."""
    return np.sign(numerators) * (np.abs(numerators) // power)


def _rounding_high_mul(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul (b >= 0: it never saturates)."""
    product = a * b
    return _c_division(product + np.where(product >= 0, 2**14, 1 - 2**14), 2**15)


def litert_hard_swish(levels, in_scale, clip_min, clip_max, bits):
    """LiteRT's built-in int8 HARD_SWISH (reference_ops::HardSwish), in C integers.

    The level times 2^7; two 16-bit multipliers of it, one onto the output
    step (`SaturatingRoundingDoublingHighMul`), one onto the step on which
    3 is 2^15 (saturating shifts around it), that one mapped from [-1, 1]
    to [0, 1] and multiplied into the other (`SaturatingDoublingHighMul`,
    toward zero), then `RoundingDivideByPOT` by the output exponent.
    """
    low, _, scale = nudged(np.float32(clip_min), np.float32(clip_max), bits)
    hires_scale = np.float32(in_scale) * np.float32(1 / 128)
    out_q, out_exponent = _int16_multiplier(hires_scale / np.float32(scale))
    relu_q, relu_exponent = _int16_multiplier(hires_scale / np.float32(3 / 2**15))
    hires = np.asarray(levels, np.int64) * 128
    preshift = _rounding_high_mul(hires, out_q)
    reluish = hires
    if relu_exponent > 0:
        reluish = np.clip(reluish << (relu_exponent - 1), -(2**15), 2**15 - 1)
    reluish = _rounding_high_mul(reluish, relu_q)
    if relu_exponent > 0:
        reluish = np.clip(reluish << 1, -(2**15), 2**15 - 1)
    if relu_exponent < 0:
        reluish = _rounding_divide(reluish, -relu_exponent)
    reluish = (reluish + 2**15) >> 1
    written = _rounding_divide(_c_division(reluish * preshift, 2**15), -out_exponent)
    level = np.clip(written + zero_point(clip_min, clip_max, bits), 0, 2**bits - 1)
    return level * scale + low
