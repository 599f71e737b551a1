"""ULQ for weights: a learned symmetric scale per channel, trained with LSQ gradients."""

import math

import tensorflow as tf

from keras_qat import kernel_layout
from keras_qat._keras import keras
from keras_qat.quantizers import ranges
from keras_qat.quantizers.base import WeightQuantizerBase


def ulq_weight_fake_quant(kernel, scale, num_bits):
    """Fake-quantizes channels-last weights with a learned step `scale`.

    Forward: `clamp(round(w / s), -qmax, qmax) * s` as a fake-quant op.
    Backward (AMCT's weight ULQ, LSQ): `dw = dy` where `|w/s| <= qmax`, else 0;
    `ds = g * sum(dy * d)`, with `d = round(r) - r` inside, `-qmax` / `qmax`
    below / above, `r = w / s` and `g = 1 / sqrt(N * qmax)`, N the weights
    per scale.

    Args:
        kernel: Weights with channels last.
        scale: Per-channel vector, or a scalar for per-tensor.
        num_bits: 8 or 4.

    Returns:
        The fake-quantized kernel.
    """
    qmax = float(ranges.signed_qmax(num_bits))
    per_channel = scale.shape.rank > 0
    axes = list(range(kernel.shape.rank - 1)) if per_channel else None
    count = kernel.shape.num_elements() // (kernel.shape[-1] if per_channel else 1)
    gradient_scale = 1.0 / math.sqrt(count * qmax)

    @tf.custom_gradient
    def quantize(w, s):
        def grad(dy):
            ratio = w / s
            inside = tf.abs(ratio) <= qmax
            step = tf.where(inside, tf.floor(ratio + 0.5) - ratio, tf.sign(ratio) * qmax)
            d_scale = tf.reduce_sum(dy * step, axis=axes) * gradient_scale
            return tf.where(inside, dy, tf.zeros_like(dy)), d_scale

        return ranges.symmetric_fake_quant(w, s * qmax, num_bits), grad

    return quantize(kernel, scale)


class UlqWeightQuantizer(WeightQuantizerBase):
    """Weight ULQ (`retrain_weight_config.algo: ulq_quantize`).

    Owns a trainable scale (per output channel when `channel_wise`), which
    `initialize` sets by the ARQ rule `max|w| / qmax` once the layer holds its
    trained weights. Arguments: see `WeightQuantizerBase`.
    """

    def build(self, tensor_shape, name, layer):
        channels = kernel_layout.channel_count(tensor_shape, self.layout)
        scale = layer.add_weight(
            f"{name}_scale",
            shape=(channels,) if self.channel_wise else (),
            initializer=keras.initializers.Constant(1.0),
            trainable=True,
            constraint=ranges.positive,
        )
        return {"scale": scale}

    def initialize(self, weights, kernel):
        """Sets the scale by the ARQ rule from the current `kernel`.

        Args:
            weights: The dict `build` returned.
            kernel: The layer's float kernel variable.
        """
        channels_last = kernel_layout.to_channels_last(kernel, self.layout)
        qmax = ranges.signed_qmax(ranges.bits_of(self.dst_type))
        weights["scale"].assign(ranges.max_abs(channels_last, self.channel_wise) / qmax)

    def scale(self, kernel, weights):
        return ranges.positive(weights["scale"])

    def __call__(self, inputs, training, weights, **kwargs):
        quantized = ulq_weight_fake_quant(
            kernel_layout.to_channels_last(inputs, self.layout),
            ranges.positive(weights["scale"]),
            ranges.bits_of(self.dst_type),
        )
        return kernel_layout.from_channels_last(quantized, self.layout, tf.shape(inputs))
