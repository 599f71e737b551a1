"""TensorFlow ops called on Keras tensors, rebuilt as the Keras layers that compute them.

A Functional model written with `h + y`, `h * tf.sigmoid(g)`,
`tf.nn.relu(...)` or `tf.concat([a, b], -1)` holds `TFOpLambda` layers
where a Keras model holds `Add`, `Multiply`, `Activation` or `Concatenate`
layers. The file computes the same int8 ops either way, but keras_qat knows
them by the layers (an `Add` computes the file's `ADD`, a `Concatenate`
writes its inputs on one scale, a sigmoid's output is on the `LOGISTIC`'s
fixed grid): with the ops, small CNNs were a step or more off (a residual
`tf.nn.relu(h + y)` and a gate `h * tf.sigmoid(y)`: top-1 agreement 0.94;
a `tf.concat` of two convolutions: 0.54, up to 6 steps). At the door each
such op becomes that layer, under the op's name: an add, subtract,
multiply, maximum or minimum of two tensors of one shape, a concatenation
of tensors, and a sigmoid, tanh, ReLU or ReLU6 of a tensor.

So does a `Softmax` layer over the last axis, as `Activation("softmax")`:
the file's SOFTMAX writes on a fixed grid, which keras_qat simulates for
the activation (`FileActivation`) but not for the layer (a small model:
top-1 agreement 0.64, up to 4 steps off).
"""

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.layer_rebuild import Rebuilder

_L = keras.layers

_TWO_TENSORS = {
    "__operators__.add": _L.Add,
    "math.add": _L.Add,
    "math.subtract": _L.Subtract,
    "math.multiply": _L.Multiply,
    "math.maximum": _L.Maximum,
    "math.minimum": _L.Minimum,
}

_ACTIVATIONS = {
    "math.sigmoid": "sigmoid",
    "nn.sigmoid": "sigmoid",
    "math.tanh": "tanh",
    "nn.tanh": "tanh",
    "nn.relu": "relu",
    "nn.relu6": "relu6",
}


def _keras_tensor(value):
    return getattr(value, "_keras_history", None) is not None


def _arguments(args, kwargs, names):
    """The op's arguments `names`, positional first, then by keyword; `name` aside."""
    rest = {key: value for key, value in kwargs.items() if key != "name"}
    values = list(args) + [rest.pop(name) for name in names[len(args) :] if name in rest]
    return values if len(values) == len(names) and not rest else None


def _last_axis_softmax(layer, args, kwargs):
    """Whether `layer`'s call is a `Softmax` over the last axis, with no mask."""
    if type(layer) is not _L.Softmax or kwargs.get("mask") is not None or len(args) != 1:
        return False
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return list(axes) in ([-1], [len(args[0].shape) - 1])


def _as_layer(layer, args, kwargs):
    """`(layer to make, its call's inputs)` for a call of such an op or layer, or `None`."""
    if _last_axis_softmax(layer, args, kwargs):
        return _L.Activation("softmax", name=layer.name), args[0]
    symbol = getattr(layer, "symbol", None)
    if symbol in _TWO_TENSORS:
        operands = _arguments(args, kwargs, ("x", "y"))
        if operands is None or not all(_keras_tensor(t) for t in operands):
            return None
        if operands[0].shape != operands[1].shape:
            return None  # broadcasting: no merge layer computes it
        return _TWO_TENSORS[symbol](name=layer.name), list(operands)
    if symbol in _ACTIVATIONS:
        # tf.nn.relu names its argument `features`, tf.math.sigmoid `x`.
        operands = _arguments(args, kwargs, ("features",)) or _arguments(args, kwargs, ("x",))
        if operands is None or not _keras_tensor(operands[0]):
            return None
        return _L.Activation(_ACTIVATIONS[symbol], name=layer.name), operands[0]
    if symbol == "concat":
        operands = _arguments(args, kwargs, ("values", "axis"))
        if operands is None or not all(_keras_tensor(t) for t in operands[0]):
            return None
        return _L.Concatenate(axis=int(operands[1]), name=layer.name), list(operands[0])
    return None


def _has_ops_to_rebuild(model):
    return any(
        _has_ops_to_rebuild(layer)
        if functional.is_graph_network(layer)
        else _as_layer(layer, args, kwargs) is not None
        for layer, args, kwargs in functional.calls(model)
    )


class _OpRebuilder(Rebuilder):
    """Rebuilds a model with those TensorFlow ops as Keras layers."""

    def replace(self, layer, args, kwargs):
        made = _as_layer(layer, args, kwargs)
        if made is None:
            return None
        new_layer, inputs = made
        return self.made_layer(layer.name, lambda: new_layer)(inputs)


def ops_as_layers(model):
    """Returns `model` itself, or its rebuild with TensorFlow ops as Keras layers.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when it calls no such op, else a new Functional model of the
        same name (see the module).

    Raises:
        UnsupportedModelError: for a rebuild that does not compute what the
            original computes.
    """
    if not functional.is_graph_network(model) or not _has_ops_to_rebuild(model):
        return model
    return _OpRebuilder().rebuild(model, "its TensorFlow ops as Keras layers")
