"""The layer types keras_qat quantizes, as a data table.

Each entry says which kernel attributes ARQ quantizes (empty: the layer has no
weights and only its input is quantized) and the seeds' default for
`channel_wise`. Lookup is by exact class, so a user subclass of `Conv2D` with
its own `call` is never silently treated as a plain convolution.
"""

import dataclasses

from keras_qat._keras import keras


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How keras_qat quantizes one layer type.

    Args:
        kernel_attrs: Names of the layer attributes holding the weights ARQ
            quantizes. Empty for layers quantized at their input only.
        channel_wise_default: Default of `retrain_weight_config.channel_wise`.
    """

    kernel_attrs: tuple[str, ...]
    channel_wise_default: bool = True

    @property
    def has_weights(self):
        return bool(self.kernel_attrs)


_L = keras.layers

QUANTIZABLE_LAYERS = {
    _L.Conv1D: LayerSpec(("kernel",)),
    _L.Conv2D: LayerSpec(("kernel",)),
    _L.DepthwiseConv2D: LayerSpec(("depthwise_kernel",)),
    _L.SeparableConv2D: LayerSpec(("depthwise_kernel", "pointwise_kernel")),
    _L.Conv2DTranspose: LayerSpec(("kernel",)),
    # AMCT forbids per-channel MatMul; its default stays per-tensor.
    _L.Dense: LayerSpec(("kernel",), channel_wise_default=False),
    _L.AveragePooling2D: LayerSpec(()),
}

QUANTIZABLE_TYPE_NAMES = {cls.__name__: cls for cls in QUANTIZABLE_LAYERS}


def layer_spec(layer):
    """Returns the `LayerSpec` of `layer`, or None when it is not quantizable.

    Args:
        layer: A tf_keras layer.

    Returns:
        The table entry for the layer's exact class, or None.
    """
    return QUANTIZABLE_LAYERS.get(type(layer))
