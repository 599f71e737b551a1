"""Layers as TFLite can run them per-channel: the kernel already in a CONV_2D layout.

The converter reads a per-channel weight range only when the fake-quantized
variable is itself a 4-D CONV_2D kernel with channels last: any reshape or
transpose between the fake-quant op and the op using it fails conversion
("mismatched quantized axes"). Dense, Conv1D and Conv2DTranspose kernels need
one, so the export copy rebuilds those layers in these equivalent forms. Each
keeps the original layer's output channels in the same order, so the same
weight quantizer (same scales) applies unchanged to `deploy_kernel(kernel)`.
"""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.errors import ExportError
from keras_qat.plain_call import PlainCall


class _DeployLayer(PlainCall, keras.layers.Layer):
    """A conv-like layer with a `kernel` (h, w, in, out), a bias and an activation.

    Subclasses add the bias and apply the activation (`_finish`) right after
    the op, before any reshape: the converter fuses them into the op only
    there. Behind a reshape the bias is an int8 ADD of its own, which rounds
    the op's output on a grid of the converter's calibration and again after
    the bias.

    Args:
        filters: Output channels.
        kernel_size: `(h, w)` of the 4-D kernel (`()`: a 2-D kernel).
        activation: Activation name or callable. Defaults to `None`.
        use_bias: Defaults to `True`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, filters, kernel_size, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(kernel_size)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(
            "kernel", shape=(*self.kernel_size, input_shape[-1], self.filters)
        )
        self.bias = self.add_weight("bias", shape=(self.filters,)) if self.use_bias else None
        super().build(input_shape)

    def _finish(self, outputs):
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
        }


def _reshape_last(tensor, like, channels):
    """Reshapes `tensor` to the shape of `like` with the last axis `channels`."""
    inner = like.shape[1:-1]
    if inner.is_fully_defined():
        return tf.reshape(tensor, [-1, *inner.as_list(), channels])
    return tf.reshape(tensor, tf.concat([tf.shape(like)[:-1], [channels]], 0))


class DenseAsConv(_DeployLayer):
    """Dense as a 1x1 CONV_2D between two reshapes (kernel `(1, 1, in, units)`).

    Arguments: see `_DeployLayer` (`kernel_size` is `(1, 1)`).
    """

    def __init__(self, filters, kernel_size=(1, 1), **kwargs):
        super().__init__(filters, kernel_size, **kwargs)

    @classmethod
    def config_from(cls, layer_config):
        """Constructor arguments from a `Dense` config."""
        return _common(layer_config, filters=layer_config["units"])

    @staticmethod
    def deploy_kernel(kernel):
        """`(in, units)` -> `(1, 1, in, units)`."""
        return kernel.reshape((1, 1, *kernel.shape))

    def call(self, inputs):
        pixels = tf.reshape(inputs, (-1, 1, 1, inputs.shape[-1]))
        outputs = tf.nn.conv2d(pixels, self.kernel, 1, "VALID")
        return _reshape_last(self._finish(outputs), inputs, self.filters)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.filters])


class DenseOnRows(_DeployLayer):
    """Dense on an input of rank > 2 as one FULLY_CONNECTED over its rows (kernel `(in, units)`).

    tf_keras computes such a Dense with `tensordot`, which the converter makes
    a FULLY_CONNECTED without bias and an int8 ADD of the bias after it: a
    second rounding, and the bias on the ADD's grid instead of the int32 one
    the QAT model rounds it to. A matrix product of the rows takes the bias in.

    Arguments: see `_DeployLayer` (`kernel_size` is `()`).
    """

    def __init__(self, filters, kernel_size=(), **kwargs):
        super().__init__(filters, kernel_size, **kwargs)

    config_from = DenseAsConv.config_from

    @staticmethod
    def deploy_kernel(kernel):
        """The Dense kernel as it is."""
        return kernel

    def call(self, inputs):
        rows = tf.reshape(inputs, (-1, inputs.shape[-1]))
        return _reshape_last(self._finish(tf.matmul(rows, self.kernel)), inputs, self.filters)

    compute_output_shape = DenseAsConv.compute_output_shape


class Conv1DAsConv2D(_DeployLayer):
    """Conv1D as a CONV_2D over a height-1 image (kernel `(1, k, in, filters)`).

    Args:
        filters: Output channels.
        kernel_size: `(1, k)`.
        strides: Stride along the sequence. Defaults to `1`.
        padding: `"valid"`, `"same"` or `"causal"`. Defaults to `"valid"`.
        dilation_rate: Defaults to `1`.
        **kwargs: `_DeployLayer` arguments.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.strides = strides
        self.padding = padding
        self.dilation_rate = dilation_rate

    @classmethod
    def config_from(cls, layer_config):
        """Constructor arguments from a `Conv1D` config (one group, channels last)."""
        _require(layer_config, groups=1, data_format="channels_last")
        return _common(
            layer_config,
            filters=layer_config["filters"],
            kernel_size=(1, layer_config["kernel_size"][0]),
            strides=layer_config["strides"][0],
            padding=layer_config["padding"],
            dilation_rate=layer_config["dilation_rate"][0],
        )

    @staticmethod
    def deploy_kernel(kernel):
        """`(k, in, filters)` -> `(1, k, in, filters)`."""
        return kernel[None]

    def call(self, inputs):
        padding = self.padding.upper()
        if self.padding == "causal":
            left = self.dilation_rate * (self.kernel_size[1] - 1)
            inputs = tf.pad(inputs, [[0, 0], [left, 0], [0, 0]])
            padding = "VALID"
        outputs = tf.nn.conv2d(
            inputs[:, None],
            self.kernel,
            (1, self.strides),
            padding,
            dilations=(1, self.dilation_rate),
        )
        return self._finish(outputs)[:, 0]

    def get_config(self):
        return {
            **super().get_config(),
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }


class TransposeAsConv(_DeployLayer):
    """Conv2DTranspose as zero insertion, padding and a stride-1 CONV_2D.

    A transposed convolution with stride s equals a plain convolution, with
    the kernel flipped in space and its channel axes swapped, of the input with
    s - 1 zeros inserted between pixels and padded by k - 1 minus the crop of
    the layer's padding mode. Int8 PAD fills with the zero point, an exact 0.

    Args:
        filters: Output channels.
        kernel_size: `(kh, kw)`.
        strides: `(sh, sw)`. Defaults to `(1, 1)`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        **kwargs: `_DeployLayer` arguments.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.strides = tuple(strides)
        self.padding = padding

    @classmethod
    def config_from(cls, layer_config):
        """Constructor arguments from a `Conv2DTranspose` config (no output_padding/dilation)."""
        _require(
            layer_config,
            output_padding=None,
            dilation_rate=(1, 1),
            groups=1,
            data_format="channels_last",
        )
        return _common(
            layer_config,
            filters=layer_config["filters"],
            kernel_size=layer_config["kernel_size"],
            strides=layer_config["strides"],
            padding=layer_config["padding"],
        )

    @staticmethod
    def deploy_kernel(kernel):
        """`(kh, kw, filters, in)` -> flipped `(kh, kw, in, filters)`."""
        return np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))

    def _pads(self, axis):
        """`(before, after)` padding of the zero-inserted input along spatial `axis`."""
        k, s = self.kernel_size[axis], self.strides[axis]
        crop = max(k - s, 0) // 2 if self.padding == "same" else 0
        # The zero-inserted input already ends in s - 1 zeros; "valid" output is
        # max(k - s, 0) longer than input * stride.
        extra = max(k - s, 0) if self.padding == "valid" else 0
        return k - 1 - crop, extra + crop

    def call(self, inputs):
        sh, sw = self.strides
        if (sh, sw) != (1, 1):
            shape = tf.shape(inputs)
            rows = tf.reshape(inputs, [-1, 1, shape[2], 1, inputs.shape[-1]])
            rows = tf.pad(rows, [[0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]])
            inputs = tf.reshape(rows, [-1, shape[1] * sh, shape[2] * sw, inputs.shape[-1]])
        padded = tf.pad(inputs, [[0, 0], self._pads(0), self._pads(1), [0, 0]])
        return self._finish(tf.nn.conv2d(padded, self.kernel, 1, "VALID"))

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "padding": self.padding}


def _require(layer_config, **expected):
    """Refuses a per-channel export this module cannot reproduce exactly.

    Raises:
        ExportError: naming the layer, the option and the way out.
    """
    for key, value in expected.items():
        received = layer_config.get(key, value)
        if (tuple(received) if isinstance(received, list) else received) != value:
            raise ExportError(
                f"Layer '{layer_config['name']}': a per-channel {key}={received!r} kernel "
                "cannot be exported to TFLite. Set retrain_weight_config.channel_wise to "
                "false for this layer (per-tensor scales convert as they are)."
            )


def _common(layer_config, **arguments):
    return {
        "name": layer_config["name"],
        "activation": layer_config["activation"],
        "use_bias": layer_config["use_bias"],
        **arguments,
    }


# Original class -> its deploy form.
DEPLOY_FORMS = {
    keras.layers.Dense: DenseAsConv,
    keras.layers.Conv1D: Conv1DAsConv2D,
    keras.layers.Conv2DTranspose: TransposeAsConv,
}
