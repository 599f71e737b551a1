"""Range maths shared by the quantizers: bits, scales, nudging.

Everything here is a small pure function of tensors (`op_nudge`: of host
numbers, for the export). The quantizers compose them and end in a
`tf.quantization.fake_quant_*` op, the only form the TFLite converter reads
ranges from. That op rounds half up (`floor(v + 0.5)`), and it is the
rounding keras_qat uses everywhere.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

DST_TYPE_BITS = {"INT8": 8, "INT4": 4}

# Smallest clip magnitude: an all-zero channel or a collapsed range must not
# divide by zero (the fake-quant op and TFLite both need a positive scale).
MIN_RANGE = 1e-8


def positive(value):
    """Projects a scale or upper bound to at least `MIN_RANGE`."""
    return tf.maximum(value, MIN_RANGE)


def bits_of(dst_type):
    """Returns the bit width of a config `dst_type` ("INT8" -> 8)."""
    return DST_TYPE_BITS[dst_type]


def divided(numerator, denominator):
    """`numerator / denominator`, correctly rounded in a TensorFlow graph too.

    Grappler rewrites a division by a constant into a product with its
    reciprocal, which is one ulp off for most numerators (for 74 % of
    random float32 values over 255), while the file's scales come from the
    exact quotient. `divide_no_nan` is not rewritten; the denominators here
    are never 0.

    Args:
        numerator: A float32 tensor.
        denominator: A number or float32 tensor (not 0).

    Returns:
        The float32 quotient.
    """
    return tf.math.divide_no_nan(numerator, tf.cast(denominator, tf.float32))


def signed_qmax(num_bits):
    """Largest integer of the narrow signed range [-(2^(b-1)-1), 2^(b-1)-1]."""
    return 2 ** (num_bits - 1) - 1


def max_abs(kernel, channel_wise):
    """Returns max|w| per channel (last axis) or over the whole tensor.

    Args:
        kernel: Weights with channels last.
        channel_wise: Reduce all axes but the last (True) or all (False).

    Returns:
        A vector of per-channel maxima or a scalar, at least `MIN_RANGE`.
    """
    axes = list(range(kernel.shape.rank - 1)) if channel_wise else None
    return positive(tf.reduce_max(tf.abs(kernel), axis=axes))


def symmetric_fake_quant(kernel, bound, num_bits):
    """Fake-quantizes to the narrow signed grid with step `bound / qmax`.

    Args:
        kernel: Weights with channels last.
        bound: Per-channel vector or scalar: the largest representable magnitude.
        num_bits: Bit width.

    Returns:
        `clamp(round(w / s), -qmax, qmax) * s`, s = bound / qmax, as one
        `fake_quant_with_min_max_vars[_per_channel]` op.
    """
    if bound.shape.rank == 0:
        return tf.quantization.fake_quant_with_min_max_vars(
            kernel, -bound, bound, num_bits=num_bits, narrow_range=True
        )
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=num_bits, narrow_range=True
    )


class Nudged(NamedTuple):
    """An asymmetric grid: real = scale * (q - zero_point), q in [0, 2^b - 1]."""

    low: float
    high: float
    scale: float
    zero_point: int


def op_nudge(clip_min, clip_max, num_bits):
    """The grid `fake_quant_with_min_max_*` puts over [clip_min, clip_max], bit for bit.

    The op's kernel nudges in float32; the TFLite converter nudges the same
    bounds again in float64, and the same formula in a TensorFlow graph may
    be rewritten by Grappler (a division by a constant becomes a product
    with its reciprocal). Where the zero point `-clip_min / scale` is a tie,
    as for any symmetric range at 8 bits (127.5), the three can round it to
    different integers. Computed here on the host, the op's way: the
    converter, given these `low`/`high`, finds the same zero point.

    Args:
        clip_min: Lower clip bound (<= 0), a number.
        clip_max: Upper clip bound (> clip_min), a number.
        num_bits: Bit width.

    Returns:
        A `Nudged`, its numbers float32 values as Python floats.
    """
    f32 = np.float32
    quant_max = f32(2**num_bits - 1)
    scale = (f32(clip_max) - f32(clip_min)) / quant_max
    zero_point_from_min = f32(0) - f32(clip_min) / scale
    # std::round, half away from zero; the value is >= 0 once clipped.
    zero_point = f32(np.floor(np.float64(np.clip(zero_point_from_min, 0, quant_max)) + 0.5))
    return Nudged(
        float(-zero_point * scale),
        float((quant_max - zero_point) * scale),
        float(scale),
        int(zero_point),
    )
