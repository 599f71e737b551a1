"""ARQ: symmetric weight quantization with the scale taken from the weights."""

import tensorflow as tf

from keras_qat.kernel_layout import from_channels_last, to_channels_last
from keras_qat.quantizers import ranges
from keras_qat.quantizers.base import WeightQuantizerBase


def arq_fake_quant(kernel, num_bits, channel_wise, kernel_layout):
    """Applies ARQ to a kernel.

    Formula: `a = max|w|` (per output channel when `channel_wise`),
    `s = a / (2^(b-1) - 1)`, `w_q = clamp(round(w / s), -(2^(b-1)-1), 2^(b-1)-1) * s`,
    rounding half up. The gradient to `w` is straight-through; `a` gets none.

    Args:
        kernel: The float weights.
        num_bits: 8 or 4.
        channel_wise: One scale per output channel, else one per tensor.
        kernel_layout: Where the output channels are (`kernel_layout.KERNEL_LAYOUTS`).

    Returns:
        The fake-quantized kernel, same shape.
    """
    layout = kernel_layout if channel_wise else "last"
    weights = to_channels_last(kernel, layout)
    bound = tf.stop_gradient(ranges.max_abs(weights, channel_wise))
    quantized = ranges.symmetric_fake_quant(weights, bound, num_bits)
    return from_channels_last(quantized, layout, tf.shape(kernel))


class ArqQuantizer(WeightQuantizerBase):
    """ARQ weight quantizer (`retrain_weight_config.algo: arq_retrain`).

    The scale is recomputed from the current weights at every step, so it
    has no variables. Arguments: see `WeightQuantizerBase`.

    Example:

    >>> import numpy as np
    >>> q = ArqQuantizer("INT4", channel_wise=False)
    >>> q(np.array([0.7, -0.35, 0.1], "float32"), True, {}).numpy().round(6)
    array([ 0.7, -0.3,  0.1], dtype=float32)
    """

    def build(self, tensor_shape, name, layer):
        return {}

    def scale(self, kernel, weights):
        channels_last = to_channels_last(kernel, self.layout)
        bound = ranges.max_abs(channels_last, self.channel_wise)
        return ranges.divided(bound, ranges.signed_qmax(ranges.bits_of(self.dst_type)))

    def __call__(self, inputs, training, weights, **kwargs):
        return arq_fake_quant(
            inputs, ranges.bits_of(self.dst_type), self.channel_wise, self.kernel_layout
        )
