"""What every keras_qat quantizer shares: config equality, and the weight quantizers' arguments."""

import tensorflow as tf

from keras_qat._keras import tfmot
from keras_qat.kernel_layout import KERNEL_LAYOUTS, from_channels_last, to_channels_last


class QuantizerBase(tfmot.quantization.keras.quantizers.Quantizer):
    """A TFMOT quantizer whose `get_config` is its constructor arguments.

    Two quantizers are equal when their configs are, which is what TFMOT
    compares after deserialisation.
    """

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class WeightQuantizerBase(QuantizerBase):
    """Arguments of a weight quantizer, one-to-one with `retrain_weight_config`.

    Args:
        dst_type: `"INT8"` or `"INT4"`. Defaults to `"INT8"`.
        channel_wise: One scale per output channel. Defaults to `True`.
        kernel_layout: Where the kernel's output channels are, one of
            `"last"`, `"depthwise"`, `"transpose"` (from the layer table).
            Defaults to `"last"`.

    Raises:
        ValueError: for an unknown `kernel_layout`.
    """

    def __init__(self, dst_type="INT8", channel_wise=True, kernel_layout="last"):
        if kernel_layout not in KERNEL_LAYOUTS:
            raise ValueError(
                f"kernel_layout must be one of {KERNEL_LAYOUTS}. "
                f"Received: kernel_layout={kernel_layout!r}"
            )
        self.dst_type = dst_type
        self.channel_wise = channel_wise
        self.kernel_layout = kernel_layout

    @property
    def layout(self):
        """The layout used: per-tensor quantization needs no channel reshuffle."""
        return self.kernel_layout if self.channel_wise else "last"

    def scale(self, kernel, weights):
        """The step of the kernel's integer grid: a scalar, or one per output channel.

        Args:
            kernel: The float kernel variable.
            weights: The dict `build` returned.

        Returns:
            A float tensor (channels-last order).
        """
        raise NotImplementedError

    def levels(self, quantized, unit):
        """The integers a quantized kernel holds on `unit`: `round(quantized / unit)`.

        Args:
            quantized: The kernel this quantizer returned.
            unit: Its step (`scale`, or a fraction of it), a scalar or one
                per output channel.

        Returns:
            A float tensor of integers, the kernel's shape.
        """
        channels_last = to_channels_last(quantized, self.layout)
        return from_channels_last(tf.round(channels_last / unit), self.layout, tf.shape(quantized))

    def get_config(self):
        return {
            "dst_type": self.dst_type,
            "channel_wise": self.channel_wise,
            "kernel_layout": self.kernel_layout,
        }
