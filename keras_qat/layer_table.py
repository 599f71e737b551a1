"""The layer types keras_qat quantizes, as a data table.

Each entry says which kernel attributes the weight quantizer handles and how
each kernel lays out its output channels (empty: the layer has no weights and
only its input is quantized), and the default of `channel_wise` (true, but false
for Dense, as AMCT's retrain config table gives it).
Lookup is by exact class, so a user subclass of `Conv2D` with its own `call`
is never silently treated as a plain convolution.
"""

import dataclasses

from keras_qat._keras import keras


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How keras_qat quantizes one layer type.

    Args:
        kernels: `(attribute name, channel layout)` of each weight to quantize,
            the layout one of `kernel_layout.KERNEL_LAYOUTS`. Empty for
            layers quantized at their input only.
        channel_wise_default: Default of `retrain_weight_config.channel_wise`.
    """

    kernels: tuple[tuple[str, str], ...]
    channel_wise_default: bool = True

    @property
    def has_weights(self):
        return bool(self.kernels)


_L = keras.layers

_KERNEL = (("kernel", "last"),)

QUANTIZABLE_LAYERS = {
    _L.Conv1D: LayerSpec(_KERNEL),
    _L.Conv2D: LayerSpec(_KERNEL),
    _L.DepthwiseConv2D: LayerSpec((("depthwise_kernel", "depthwise"),)),
    _L.SeparableConv2D: LayerSpec(
        (("depthwise_kernel", "depthwise"), ("pointwise_kernel", "last"))
    ),
    _L.Conv2DTranspose: LayerSpec((("kernel", "transpose"),)),
    # AMCT forbids per-channel MatMul; its default stays per-tensor.
    _L.Dense: LayerSpec(_KERNEL, channel_wise_default=False),
    _L.AveragePooling2D: LayerSpec(()),
}

QUANTIZABLE_TYPE_NAMES = {cls.__name__: cls for cls in QUANTIZABLE_LAYERS}

# AMCT's TensorFlow op types, accepted wherever a definition names a layer type
# (AMCT's TensorFlow `Conv2D` is Keras's `Conv2D` already).
TYPE_ALIASES = {
    "DepthwiseConv2dNative": "DepthwiseConv2D",
    "MatMul": "Dense",
    "Conv2DBackpropInput": "Conv2DTranspose",
    "AvgPool": "AveragePooling2D",
}


def layer_spec(layer):
    """Returns the `LayerSpec` of `layer`, or None when it is not quantizable.

    Args:
        layer: A tf_keras layer.

    Returns:
        The table entry for the layer's exact class, or None.
    """
    return QUANTIZABLE_LAYERS.get(type(layer))
