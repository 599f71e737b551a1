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
from keras_qat.attention_layers import AttentionContext, AttentionScores


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How keras_qat quantizes one layer type.

    Args:
        kernels: `(attribute name, channel layout)` of each weight to quantize,
            the layout one of `kernel_layout.KERNEL_LAYOUTS`. Empty for
            layers quantized at their input only.
        channel_wise_default: Default of `retrain_weight_config.channel_wise`.
        operands: Inputs quantized, each on its own grid: 2 for the
            attention products (activation by activation), 0 for an
            Embedding (its input holds indices), else 1.
    """

    kernels: tuple[tuple[str, str], ...]
    channel_wise_default: bool = True
    operands: int = 1

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
    # The gathered rows are the int8 tensor: per tensor by default, since
    # TFLite's GATHER takes one scale.
    _L.Embedding: LayerSpec((("embeddings", "rows"),), channel_wise_default=False, operands=0),
    # A product of two tensors: int8 BATCH_MATMUL, both inputs on learned grids.
    _L.Dot: LayerSpec((), operands=2),
    AttentionScores: LayerSpec((), operands=2),
    AttentionContext: LayerSpec((), operands=2),
}

QUANTIZABLE_TYPE_NAMES = [cls.__name__ for cls in QUANTIZABLE_LAYERS]

# The type names a config definition may use: the quantizable classes, and the
# layers `attention` and `graph.standalone_batch_norms` spell out as them (all
# parts of a MultiHeadAttention go by its name; an EinsumDense is a Dense by its
# own, a standalone BatchNormalization a DepthwiseConv2D).
DEFINITION_TYPE_NAMES = [
    *QUANTIZABLE_TYPE_NAMES,
    "EinsumDense",
    "MultiHeadAttention",
    "BatchNormalization",
]

# The attribute `layer_rebuild` sets on the layers it spells a layer out as.
SOURCE_KIND = "_keras_qat_source_kind"


def source_kind(layer):
    """The type name a config definition knows `layer` by: its source's, or its own class's.

    Args:
        layer: A layer of a (checked) model.

    Returns:
        `"MultiHeadAttention"` for the parts of one, `"EinsumDense"` or
        `"BatchNormalization"` for the layer standing for one, else the
        layer's class name.
    """
    return getattr(layer, SOURCE_KIND, type(layer).__name__)


# The key of a layer's second quantized input (the right-hand side of a
# product), where keras_qat names input quantizers and their clip ranges.
_RIGHT_OPERAND = "/rhs"


def operand_keys(name, spec):
    """The keys of the quantized inputs of layer `name`: the name, then `name/rhs` for a product.

    Args:
        name: The layer's name.
        spec: Its `LayerSpec`.

    Returns:
        A tuple of strings, one per quantized input, in input order.
    """
    return (name, f"{name}{_RIGHT_OPERAND}")[: spec.operands]


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
        The table entry for the layer's exact class, or None (also for a
        `Dot` that normalizes its inputs first: no one int8 product).
    """
    if isinstance(layer, _L.Dot) and layer.normalize:
        return None
    return QUANTIZABLE_LAYERS.get(type(layer))


def owner_of(key, names):
    """The layer an `operand_keys` key belongs to.

    Args:
        key: A layer name, or `name/rhs`.
        names: The names of the model's quantizable layers (a layer whose own
            name ends in `/rhs` is itself).

    Returns:
        A layer name.
    """
    return key if key in names else key.removesuffix(_RIGHT_OPERAND)
