"""The export copy's activation fake-quants: fixed ranges, nudged on the host.

In the copy the TFLite converter is given, every activation range is a
number, and each fake-quant op gets the grid the QAT model's op puts over it
(`ranges.op_nudge`) rather than the raw clip bounds. Given the raw bounds,
the converter nudges them again in float64 and, where the zero point is a
tie (any symmetric range at 8 bits, e.g. a hand-written [-1, 1]), picks the
integer next to the op's: the int8 range then sits one step away from the
trained model's, and values in the outer step disagree.
"""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import ranges
from keras_qat.report import clip_range


def fixed_fake_quant(inputs, clip_min, clip_max):
    """Fake-quantizes `inputs` to 8 bits over the op's grid for [clip_min, clip_max].

    Args:
        inputs: Float tensor.
        clip_min: Lower bound, a number.
        clip_max: Upper bound, a number above `clip_min`.

    Returns:
        The fake-quantized tensor; numbers as `fake_quant_with_min_max_vars`
        gives them for the same bounds.
    """
    grid = ranges.op_nudge(clip_min, clip_max, 8)
    return tf.quantization.fake_quant_with_min_max_args(inputs, grid.low, grid.high, num_bits=8)


class FixedInputQuantizer(keras.layers.Layer):
    """An `InputQuantizeLayer` of the export copy, its range frozen as numbers.

    INT8: the 8-bit fake-quant over the clip range. INT4 becomes its int8
    carrier (TFLite has no 4-bit activations), with the same numbers: the
    input is capped at the 4-bit grid's top hi (an int8 MINIMUM in the
    .tflite), then fake-quantized to 8 bits over [lo, lo + 255 * s4], s4 the
    4-bit step, which clips below lo. Every 4-bit level is an 8-bit level of
    that grid and nothing beyond hi survives, so the int8 model reproduces
    the 4-bit one (up to the float32 rounding of the step, which can move a
    value lying on a rounding boundary). A lower clip is left out on purpose:
    at lo = 0 it would become a rescaling RELU, rounding twice.

    Args:
        clip_min: Lower bound (<= 0).
        clip_max: Upper bound (> clip_min).
        dst_type: `"INT8"` or `"INT4"`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, clip_min, clip_max, dst_type, **kwargs):
        super().__init__(**kwargs)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.dst_type = dst_type

    @classmethod
    def freeze(cls, layer):
        """The fixed form of an `InputQuantizeLayer` at its current bounds, same name."""
        return cls(*clip_range(layer), layer.quantizer.dst_type, name=layer.name)

    def call(self, inputs):
        bits = ranges.bits_of(self.dst_type)
        if bits == 8:
            return fixed_fake_quant(inputs, self.clip_min, self.clip_max)
        grid = ranges.op_nudge(self.clip_min, self.clip_max, bits)
        top = np.float32(grid.low) + np.float32(255) * np.float32(grid.scale)
        return fixed_fake_quant(tf.minimum(inputs, grid.high), grid.low, float(top))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "dst_type": self.dst_type,
        }
