"""The .tflite's int8-to-int8 requantization, for an input quantizer reading another one's grid.

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

`pooled_levels` and `file_requantize` compute them in float32, exactly while the levels and
`m * level` stay below 2^24 (int8 levels do).
"""

import tensorflow as tf

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
    scale = (clip_max - clip_min) / levels
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
    out_scale, zero_point, low = out_grid
    multiplier = tf.round(256.0 * (in_scale / out_scale))  # lrintf: half to even
    shifted = tf.floor((levels * multiplier + 128.0) / 256.0)
    level = tf.clip_by_value(shifted + zero_point, 0.0, float(2**num_bits - 1))
    return level * out_scale + low
