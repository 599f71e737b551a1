"""BatchNormalizations that fold into no layer, spelled out as 1x1 depthwise convolutions.

A BatchNormalization folds into the convolution or dense layer before it
(`graph.bn_folding`). One after a Concatenate, an Add, a pooling or an
activation (DenseNet puts one before each ReLU and convolution, reading the
block's concatenation) folds into nothing: the converter made an int8 `MUL`
and `ADD` of it, which round twice, on ranges taken from the representative
data, and no quantizer of the QAT model rounded where they do. In inference
such a layer is `x * factor + offset` per channel: a 1x1 `DepthwiseConv2D`
with that kernel and bias, which keras_qat quantizes like any other (input
quantizer, per-channel INT8 weights, bias on the int32 grid) and the file
runs as one `DEPTHWISE_CONV_2D` with a single rounding. At the door, each
such layer on a 4-D input becomes that convolution, under the layer's name
(config definitions know it as a `BatchNormalization`); on the features of a
vector, a sequence or a volume (a head's after its global pooling, a
Conv1D's of a sequence of any length, a Conv3D's), of a shape known but
for one dimension, it runs on them reshaped to one row of an image and back
(two `RESHAPE`s, which keep the scale). Its factors are
trained from there as weights, as folded BatchNormalizations are. One before
any quantizable layer (normalising raw inputs) stays float, as everything
before the first quantizer does. One reading an average pooling that a
Concatenate also joins (DenseNet's first after each transition) reads that
concatenation's grid, as in the file (`InputQuantizeLayer`'s
`follows_pooling`).
"""

import numpy as np

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.graph import bn_folding
from keras_qat.layer_rebuild import Rebuilder
from keras_qat.layer_table import layer_spec


def _folded(model):
    """The ids of the BatchNormalizations `graph.walker` can fold, in `model` and nested models."""
    folded = {
        id(reader)
        for producer, reader in functional.sole_reader_links(model)
        if functional.called_once(producer) and bn_folding.is_foldable_batch_norm(reader, producer)
    }
    for layer in model.layers:
        if functional.is_graph_network(layer):
            folded |= _folded(layer)
    return folded


def _after_a_quantizable_layer(tensor, memo):
    """Whether a layer keras_qat can quantize computed `tensor` or its inputs, at any depth.

    The walk stops at the inputs of the model (or nested model) holding `tensor`.
    """
    layer = functional.producing_layer(tensor)
    if layer is None or isinstance(layer, keras.layers.InputLayer):
        return False
    if id(layer) not in memo:
        memo[id(layer)] = False  # guards against revisiting
        node = layer.inbound_nodes[tensor._keras_history.node_index]
        memo[id(layer)] = layer_spec(layer) is not None or any(
            _after_a_quantizable_layer(t, memo) for t in node.keras_inputs
        )
    return memo[id(layer)]


def _standalone(model, folded, memo, outputs):
    """The ids of the BatchNormalizations to spell out, in `model` and nested models.

    `outputs` are the names of the layers that are outputs of the model
    given: spelled out on a 2-D or 3-D tensor, such a layer would end in a
    Reshape and the model output would lose its name, so it is left alone.
    """
    found = set()
    for layer in model.layers:
        if functional.is_graph_network(layer):
            found |= _standalone(layer, folded, memo, outputs)
            continue
        if type(layer) is not keras.layers.BatchNormalization or id(layer) in folded:
            continue
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        inputs = [t for node in layer.inbound_nodes for t in node.keras_inputs]
        rank = len(layer.input_shape)
        if (
            (
                rank == 4
                or (
                    rank > 1
                    and layer.input_shape[1:].count(None) <= 1
                    and layer.input_shape[-1] is not None
                    and layer.name not in outputs
                )
            )
            and [a % rank for a in axes] == [rank - 1]
            and all(_after_a_quantizable_layer(t, memo) for t in inputs)
        ):
            found.add(id(layer))
    return found


class _Speller(Rebuilder):
    """Rebuilds a model with the given BatchNormalizations as depthwise convolutions."""

    def __init__(self, standalone):
        super().__init__()
        self.standalone = standalone

    def replace(self, layer, args, kwargs):
        if id(layer) not in self.standalone:
            return None

        def weights():
            factor, offset = bn_folding.affine(layer)
            return [factor.reshape(1, 1, -1, 1).astype(np.float32), offset.astype(np.float32)]

        convolution = self.made_layer(
            layer.name,
            lambda: keras.layers.DepthwiseConv2D(1, name=layer.name),
            weights,
            "BatchNormalization",
        )
        shape = tuple(layer.input_shape[1:])
        if len(shape) == 3:
            return convolution(args[0])
        # Features of a vector, a sequence or a volume: one row of an image, and back.
        as_image = self._reshape(f"{layer.name}/as_image", (1, -1, shape[-1]))
        as_before = self._reshape(
            f"{layer.name}/as_before", tuple(-1 if d is None else d for d in shape)
        )
        return as_before(convolution(as_image(args[0])))

    def _reshape(self, name, shape):
        return self.made_layer(name, lambda: keras.layers.Reshape(shape, name=name))


def spell_out_batch_norms(model):
    """Returns `model` itself, or its rebuild with standalone BatchNormalizations spelled out.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when no BatchNormalization is to be replaced, else a new
        Functional model of the same name (see the module).

    Raises:
        UnsupportedModelError: for a rebuild that does not compute what the
            original computes.
    """
    if not functional.is_graph_network(model):
        return model  # an unbuilt Sequential, which the walker refuses saying how to build it
    outputs = {functional.producing_layer(t).name for t in model.outputs}
    standalone = _standalone(model, _folded(model), {}, outputs)
    if not standalone:
        return model
    return _Speller(standalone).rebuild(model, "its standalone BatchNormalizations as convolutions")
