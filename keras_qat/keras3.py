"""Keras 3 models rebuilt as tf_keras models, the form TFMOT and keras_qat quantize.

`import keras` gives Keras 3 with TensorFlow 2.16 and later; TFMOT's wrappers
and keras_qat's quantizers are tf_keras layers. A Keras 3 Functional or
Sequential model is replayed node by node (the one place that reads Keras 3's
graph internals: `_nodes_by_depth`, `Node.arguments`, `_keras_history`): each
layer becomes the tf_keras layer of the same class and name from its config
(translated where the two differ: `batch_shape`, DTypePolicy dicts, arguments
tf_keras does not have), each operation the graph calls directly (`x + 3.0`,
`keras.ops.relu6`, ...) the TensorFlow function that computes it, and every
weight is copied by variable name. The rebuilt model is then run beside the
original on sample inputs: outputs that differ by more than float rounding
are an `UnsupportedModelError` naming the first layer that differs.
"""

import inspect

import numpy as np
import tensorflow as tf
from tf_keras.src.applications import convnext as tf_convnext

from keras_qat._keras import is_keras3_object, keras
from keras_qat.errors import UnsupportedModelError
from keras_qat.rebuild_check import differing_samples

# Config keys tf_keras's base Layer takes besides the class's own arguments.
_BASE_KEYS = {"name", "trainable", "dtype", "dynamic", "batch_input_shape", "input_shape"}
# Keys whose value does not reach the rebuilt model: the weights are copied.
_DROPPED_KEYS = {"kernel_initializer", "bias_initializer", "depthwise_initializer",
                 "pointwise_initializer", "gamma_initializer", "beta_initializer",
                 "moving_mean_initializer", "moving_variance_initializer",
                 "embeddings_initializer"}  # fmt: skip
# Keras 3 arguments that tf_keras lacks, with the value under which they change nothing.
_NEUTRAL = {"lora_rank": None, "lora_alpha": None, "quantization_config": None,
            "synchronized": False, "rms_scaling": False, "optional": False,
            "use_gate": False, "sliding_window": None, "seed": None,
            # A Resizing's: tf_keras's resizes channels-last images, without padding.
            "data_format": "channels_last", "pad_to_aspect_ratio": False,
            "fill_mode": "constant", "fill_value": 0.0, "antialias": False}  # fmt: skip


# Keras 3 application layers with a tf_keras twin of the same arguments and weights.
APPLICATION_LAYERS = {
    "keras.src.applications.convnext.LayerScale": tf_convnext.LayerScale,
    "keras.src.applications.convnext.StochasticDepth": tf_convnext.StochasticDepth,
}


def _hard_sigmoid(x):
    return tf.nn.relu6(x + 3.0) / 6.0


def _hard_silu(x):
    return x * _hard_sigmoid(x)


# Activations tf_keras does not have (or computes differently), as TensorFlow functions.
_ACTIVATIONS = {"hard_sigmoid": _hard_sigmoid, "hard_silu": _hard_silu, "hard_swish": _hard_silu}

# Operations a Keras 3 graph calls directly -> the TensorFlow function for them.
_OPERATIONS = {
    "Add": tf.math.add,
    "Subtract": tf.math.subtract,
    "Multiply": tf.math.multiply,
    "Divide": tf.math.divide,
    "TrueDivide": tf.math.truediv,
    "Negative": tf.math.negative,
    "Maximum": tf.math.maximum,
    "Minimum": tf.math.minimum,
    "Relu": tf.nn.relu,
    "Relu6": tf.nn.relu6,
    "Sigmoid": tf.math.sigmoid,
    "Silu": tf.nn.silu,
    "Tanh": tf.math.tanh,
    "HardSigmoid": _hard_sigmoid,
    "HardSilu": _hard_silu,
    "Gelu": tf.nn.gelu,
    "Softmax": tf.nn.softmax,
}


def _op_reshape(op, x, *args):
    return tf.reshape(x, [-1, *op.newshape[1:]] if op.newshape[0] in (-1, None) else op.newshape)


def _op_concatenate(op, xs, *args):
    return tf.concat(list(xs), axis=op.axis)


def _op_mean(op, x, *args):
    return tf.reduce_mean(x, axis=op.axis, keepdims=op.keepdims)


# Operations whose arguments live on the operation object.
_CONFIGURED_OPERATIONS = {
    "Reshape": _op_reshape,
    "Concatenate": _op_concatenate,
    "Mean": _op_mean,
}


def is_keras3_model(model):
    """Whether `model` is a Keras 3 model (which keras_qat rebuilds as tf_keras)."""
    return is_keras3_object(model) and hasattr(model, "layers")


def _graph_of(model):
    """The Keras 3 Functional graph of `model`, or an `UnsupportedModelError`."""
    if hasattr(model, "_functional") and not hasattr(model, "_nodes_by_depth"):
        if model._functional is None:  # a Sequential without an input shape
            raise UnsupportedModelError(
                f"Keras 3 Sequential model '{model.name}' has no input shape yet. Start it "
                "with `keras.Input(shape)` or call `model.build(input_shape)` first."
            )
        return model._functional
    if not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedModelError(
            f"Model '{model.name}' is a subclassed Keras 3 model ({type(model).__name__}); "
            "keras_qat needs the layer graph of a Functional or Sequential model. Rebuild "
            "it with the Functional API."
        )
    return model


def _plain(value):
    """A Keras 3 serialized object (`{"module", "class_name", "config"}`) in tf_keras form."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        return {"class_name": value["class_name"], "config": _plain(value["config"])}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _translated_config(layer, cls):
    """`layer`'s Keras 3 config as `cls` (its tf_keras class) takes it."""
    config = dict(layer.get_config())
    accepted = set(_BASE_KEYS)
    for base in cls.__mro__:  # arguments a subclass passes on through **kwargs
        if isinstance(base, type) and issubclass(base, keras.layers.Layer):
            accepted.update(inspect.signature(base.__init__).parameters)
    if isinstance(config.get("dtype"), dict):  # a DTypePolicy
        config["dtype"] = config["dtype"]["config"]["name"]
    if "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    translated = {}
    for key, value in config.items():
        if key in _DROPPED_KEYS:
            continue
        if key not in accepted:
            if key in _NEUTRAL and value == _NEUTRAL[key]:
                continue
            raise UnsupportedModelError(
                f"Layer '{layer.name}' ({type(layer).__name__}): tf_keras has no argument "
                f"'{key}' (Received: {key}={value!r}), so keras_qat cannot rebuild it."
            )
        translated[key] = _plain(value)
    return translated


class _Rebuilder:
    def __init__(self):
        self.layers = {}  # id(Keras 3 layer) -> (Keras 3 layer, tf_keras layer, activation after)

    def model(self, model):
        graph = _graph_of(model)
        inputs = [
            keras.Input(
                batch_shape=tuple(t.shape),
                dtype=t.dtype,
                name=t._keras_history.operation.name,
            )
            for t in graph.inputs
        ]
        outputs = self._replay(graph, inputs)
        return keras.Model(inputs, outputs, name=model.name)

    def _replay(self, graph, inputs):
        tensors = {id(original): new for original, new in zip(graph.inputs, inputs, strict=True)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                operation = node.operation
                if type(operation).__name__ == "InputLayer":
                    continue

                def mapped(value):
                    return tensors.get(id(value), value)

                args = tf.nest.map_structure(mapped, node.arguments.args)
                kwargs = {
                    k: tf.nest.map_structure(mapped, v)
                    for k, v in node.arguments.kwargs.items()
                    if v is not None and k not in ("training", "mask")
                }
                outputs = self._call(operation, args, kwargs)
                for original, new in zip(
                    tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True
                ):
                    tensors[id(original)] = new
        return tf.nest.map_structure(lambda t: tensors[id(t)], graph._outputs_struct)

    def _call(self, operation, args, kwargs):
        if hasattr(operation, "_nodes_by_depth") or hasattr(operation, "_functional"):
            graph = _graph_of(operation)  # a nested model: inlined
            return self._replay(graph, tf.nest.flatten(args[0]) if len(args) == 1 else args)
        kind = type(operation).__name__
        if not hasattr(operation, "get_weights"):  # an operation, not a layer
            return self._operation(operation, kind, args)
        layer, activation = self._layer(operation)
        outputs = layer(*args, **kwargs)
        return activation(outputs) if activation is not None else outputs

    def _operation(self, operation, kind, args):
        if kind in _OPERATIONS:
            return _OPERATIONS[kind](*args)
        if kind in _CONFIGURED_OPERATIONS:
            return _CONFIGURED_OPERATIONS[kind](operation, *args)
        raise UnsupportedModelError(
            f"Operation '{operation.name}' ({type(operation).__module__}.{kind}) has no "
            "tf_keras translation in keras_qat; build the model with a layer for it. "
            f"Translated operations: {sorted([*_OPERATIONS, *_CONFIGURED_OPERATIONS])}"
        )

    def _layer(self, layer):
        if id(layer) in self.layers:
            return self.layers[id(layer)][1:]
        kind = type(layer).__name__
        module = type(layer).__module__
        cls = APPLICATION_LAYERS.get(f"{module}.{kind}") or getattr(keras.layers, kind, None)
        if cls is None or module.split(".")[0] != "keras":
            raise UnsupportedModelError(
                f"Layer '{layer.name}' ({module}.{kind}) has no tf_keras "
                "counterpart that keras_qat can rebuild it as."
            )
        config = _translated_config(layer, cls)
        activation = None
        name = config.get("activation")
        if isinstance(name, str) and name in _ACTIVATIONS:
            config["activation"] = "linear"
            activation = _ACTIVATIONS[name]
        # tf_keras's MultiHeadAttention.from_config wants the input shapes it
        # serializes, which Keras 3 does not; built on its first call, it needs none.
        new = cls(**config) if cls is keras.layers.MultiHeadAttention else cls.from_config(config)
        self.layers[id(layer)] = (layer, new, activation)
        return new, activation

    def copy_weights(self):
        """Copies every weight by variable name (by position where the names differ)."""
        for layer, new, _ in self.layers.values():
            source = {_variable_name(w, layer.name): w for w in layer.weights}
            pairs = [(source.get(_variable_name(t, new.name)), t) for t in new.weights]
            if any(original is None for original, _ in pairs):
                # DepthwiseConv2D's `kernel` is tf_keras's `depthwise_kernel`.
                pairs = list(zip(layer.weights, new.weights, strict=False))
            if len(new.weights) != len(layer.weights) or any(
                tuple(original.shape) != tuple(target.shape) for original, target in pairs
            ):
                raise UnsupportedModelError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) has weights "
                    f"{[(w.path, tuple(w.shape)) for w in layer.weights]}, its tf_keras form "
                    f"{[(w.name, tuple(w.shape)) for w in new.weights]}: they cannot be matched."
                )
            for original, target in pairs:
                target.assign(np.asarray(original))


def _variable_name(variable, layer_name):
    """A weight's name below its layer: `kernel`, or `query/kernel` inside `mha`."""
    path = getattr(variable, "path", None) or variable.name
    return path.split(":")[0].split(f"{layer_name}/")[-1]


def _check_same(original, rebuilt, rebuilder):
    """Raises unless `rebuilt` computes what `original` computes on sample inputs."""
    samples = differing_samples(original, rebuilt)
    if samples is not None:
        raise UnsupportedModelError(
            f"Keras 3 model '{original.name}' rebuilt as tf_keras computes something else "
            f"({_first_difference(original, rebuilt, rebuilder, samples)}); keras_qat "
            "cannot quantize it faithfully."
        )


def _first_difference(original, rebuilt, rebuilder, samples):
    import keras as keras3

    for layer, new, _ in rebuilder.layers.values():
        try:
            want = keras3.Model(original.inputs, layer.output)(samples)
            got = keras.Model(rebuilt.inputs, new.output)(samples)
        except (ValueError, AttributeError):  # a layer called at several places
            continue
        if np.max(np.abs(np.asarray(want) - np.asarray(got))) > 1e-4:
            return f"first at layer '{layer.name}' ({type(layer).__name__})"
    return "at the outputs"


def as_tf_keras(model):
    """Returns `model` itself for a tf_keras model, its tf_keras rebuild for a Keras 3 one.

    Args:
        model: What the user passed as the model.

    Returns:
        A tf_keras model (a new one for a Keras 3 model, weights copied; layer
        names and the model name are the original's).

    Raises:
        UnsupportedModelError: for a subclassed Keras 3 model, a layer or
            operation with no tf_keras translation, or a rebuild that does not
            compute what the original computes.
    """
    if not is_keras3_model(model):
        return model
    rebuilder = _Rebuilder()
    rebuilt = rebuilder.model(model)
    rebuilder.copy_weights()
    _check_same(model, rebuilt, rebuilder)
    return rebuilt
