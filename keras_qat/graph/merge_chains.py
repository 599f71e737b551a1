"""Merges of several tensors spelled out as the file's chain of two-input ops.

The converter writes an `Add`, `Multiply`, `Maximum` or `Minimum` of n > 2
tensors as n - 1 two-input int8 ops, `((a + b) + c) + ...` in the order
tf_keras's layer computes it, and an `Average` as that chain of adds and
then a multiply by `1 / n`. Each op writes an int8 tensor on a range of its
own, taken from the representative data, which no quantizer of the QAT
model rounded: on a small CNN averaging two convolutions, 32 % of the
file's logits were exact, up to 4 steps off; adding three, 52 %, up to 3
steps. At the door each such layer becomes that chain of two-input layers
of its class (an Average's a chain of `Add`s, then a `TFOpLambda` dividing
by n), the last under the layer's name, so that `graph.output_plan` rounds
every tensor the file holds.
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import TFOpLambda, keras
from keras_qat.layer_rebuild import Rebuilder

_L = keras.layers

# The merges whose layer folds its inputs one by one with one two-input op.
_CHAINED = (_L.Add, _L.Multiply, _L.Maximum, _L.Minimum)


def _spelled_out(layer):
    """Whether `layer` is a merge the file computes as more than one op."""
    if isinstance(layer, _L.Average):
        return True
    if not isinstance(layer, _CHAINED):
        return False
    return any(len(tf.nest.flatten(node.keras_inputs)) > 2 for node in layer.inbound_nodes)


def _has_merges_to_spell_out(model):
    return any(
        _has_merges_to_spell_out(layer)
        if functional.is_graph_network(layer)
        else _spelled_out(layer)
        for layer in model.layers
    )


class _Chainer(Rebuilder):
    """Rebuilds a model with its merges of several tensors as chains of two-input layers."""

    def replace(self, layer, args, kwargs):
        if not _spelled_out(layer):
            return None
        inputs = tf.nest.flatten(args[0])
        average = isinstance(layer, _L.Average)
        kind = _L.Add if average else type(layer)
        total = inputs[0]
        for position, tensor in enumerate(inputs[1:], start=2):
            last = position == len(inputs) and not average
            name = layer.name if last else f"{layer.name}/{position}"
            total = self.made_layer(name, lambda name=name: kind(name=name))([total, tensor])
        if not average:
            return total
        divide = self.made_layer(layer.name, lambda: TFOpLambda(tf.math.truediv, name=layer.name))
        return divide(total, float(len(inputs)))


def spell_out_merges(model):
    """Returns `model` itself, or its rebuild with merges of several tensors as chains.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when it has no such merge, else a new Functional model of
        the same name (see the module).

    Raises:
        UnsupportedModelError: for a rebuild that does not compute what the
            original computes.
    """
    if not functional.is_graph_network(model) or not _has_merges_to_spell_out(model):
        return model
    return _Chainer().rebuild(model, "its merges of several tensors as chains of two-input ops")
