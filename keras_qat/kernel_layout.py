"""Where a kernel keeps its output channels, per layer kind, and how to put them last.

The layouts, as tf_keras stores the kernels:
  "last":      (..., out) - Conv1D, Conv2D, Dense, SeparableConv2D's pointwise
  "depthwise": (h, w, in, multiplier) - one output channel per in x multiplier
  "transpose": (h, w, out, in) - Conv2DTranspose, channels on axis -2
  "rows":      (rows, width) - Embedding, one channel per row
Per-channel quantizers, BN folding and the export's weight pinning all see a
kernel with its channels last through these functions.
"""

import tensorflow as tf

KERNEL_LAYOUTS = ("last", "depthwise", "transpose", "rows")


def to_channels_last(kernel, layout):
    """Reshapes/transposes `kernel` so its output channels are the last axis.

    Args:
        kernel: A weight tensor or array.
        layout: One of `KERNEL_LAYOUTS`.

    Returns:
        The kernel with channels last, a tensor (the input itself for "last").
    """
    if layout == "depthwise":
        shape = tf.shape(kernel)
        return tf.reshape(kernel, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
    if layout == "transpose":
        return tf.transpose(kernel, [0, 1, 3, 2])
    if layout == "rows":
        return tf.transpose(kernel)
    return kernel


def from_channels_last(tensor, layout, shape):
    """Inverts `to_channels_last` for a kernel of the given `shape`."""
    if layout == "depthwise":
        return tf.reshape(tensor, shape)
    if layout == "transpose":
        return tf.transpose(tensor, [0, 1, 3, 2])
    if layout == "rows":
        return tf.transpose(tensor)
    return tensor


def channel_count(shape, layout):
    """The number of output channels of a kernel of `shape` laid out as `layout`."""
    if layout == "depthwise":
        return shape[-2] * shape[-1]
    if layout in ("transpose", "rows"):
        return shape[-2]
    return shape[-1]
