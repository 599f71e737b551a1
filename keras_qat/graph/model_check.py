"""Checks that a model is one keras_qat can walk, and lists its layers."""

import collections
import warnings

from keras_qat import functional
from keras_qat._keras import keras, tfmot
from keras_qat.attention import open_attention
from keras_qat.converter_facts import is_opaque
from keras_qat.errors import UnsupportedModelError
from keras_qat.graph.merge_chains import spell_out_merges
from keras_qat.graph.op_layers import ops_as_layers
from keras_qat.graph.repeated_layers import merge_repeated_layers
from keras_qat.graph.shared_layers import split_shared_layers
from keras_qat.graph.standalone_batch_norms import spell_out_batch_norms
from keras_qat.keras3 import as_tf_keras
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers.file_activation import FileActivation
from keras_qat.quantizers.input_layer import InputQuantizeLayer
from keras_qat.quantizers.output_layer import OutputQuantizeLayer

# Layers that only a quantization-aware model holds (keras_qat's or TFMOT's).
_QUANTIZATION_LAYERS = (
    tfmot.quantization.keras.QuantizeWrapper,
    InputQuantizeLayer,
    OutputQuantizeLayer,
    FileActivation,
)


def _is_walkable(model):
    # An unbuilt Sequential is not a graph network yet, but its order is known.
    return isinstance(model, keras.Sequential) or functional.is_graph_network(model)


def iter_containers(model):
    """Yields `model` and every Sequential/Functional model nested in it.

    Args:
        model: A tf_keras Sequential or Functional model.

    Yields:
        Each walkable model once, outermost first.
    """
    seen = set()
    stack = [model]
    while stack:
        container = stack.pop(0)
        if id(container) in seen:
            continue
        seen.add(id(container))
        yield container
        stack.extend(layer for layer in container.layers if _is_walkable(layer))


def model_layers(model):
    """Lists the layers of `model`, descending into nested sub-models.

    Args:
        model: A tf_keras Sequential or Functional model.

    Returns:
        Every layer that is not itself a nested model, each once (a layer shared
        by several sub-models appears once), in model order.
    """
    layers, seen = [], set()
    for container in iter_containers(model):
        for layer in container.layers:
            if not _is_walkable(layer) and id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
    return layers


def check_model(model):
    """Raises `UnsupportedModelError` unless keras_qat can quantize `model`.

    Args:
        model: What the user passed as the model.

    Raises:
        UnsupportedModelError: for anything that is not a tf_keras model, a
            subclassed model, a model that is already quantization-aware, or
            duplicate layer names.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Expected a tf_keras Sequential or Functional model. Received: model={model!r}"
        )
    if not _is_walkable(model):
        raise UnsupportedModelError(
            f"Model '{model.name}' is a subclassed model ({type(model).__name__}); keras_qat "
            "needs the layer graph of a Sequential or Functional model. Rebuild it with the "
            "Functional API, or quantize its Functional parts and keep the subclass as a wrapper."
        )
    layers = model_layers(model)
    quantized = [layer.name for layer in layers if isinstance(layer, _QUANTIZATION_LAYERS)]
    if quantized:
        raise UnsupportedModelError(
            f"Model '{model.name}' is already quantization-aware (an apply_retrain_config or "
            "TFMOT result); create and apply the config on the float model it came from. "
            f"Received: quantization layers {quantized[:5]}{' ...' if len(quantized) > 5 else ''}"
        )
    names = collections.Counter(layer.name for layer in layers)
    names.update(c.name for c in iter_containers(model) if c is not model)
    duplicates = sorted(name for name, count in names.items() if count > 1)
    if duplicates:
        raise UnsupportedModelError(
            f"Model '{model.name}' has duplicate layer names; the retrain config is keyed by "
            "layer name, so each must be unique. Rename them (e.g. pass `name=` when building). "
            f"Received: duplicated names={duplicates}"
        )


def checked_model(model):
    """The tf_keras model keras_qat works on for the user's `model`, checked.

    Args:
        model: A tf_keras or Keras 3 Sequential or Functional model.

    Returns:
        `model` itself, or its rebuild: as tf_keras for a Keras 3 model
        (`keras3.as_tf_keras`), with attention layers opened up
        (`attention`), TensorFlow ops as the Keras layers that compute them
        (`op_layers`), repeated weightless layers made one
        (`repeated_layers`), merges of several tensors as chains of two-input
        ones (`merge_chains`), standalone BatchNormalizations as
        convolutions (`standalone_batch_norms`) and each call of a shared
        weightless layer after its first on a copy of it (`shared_layers`).

    Raises:
        UnsupportedModelError: see `check_model` and `keras3.as_tf_keras`.
    """
    model = as_tf_keras(model)
    check_model(model)
    model = spell_out_merges(open_attention(merge_repeated_layers(ops_as_layers(model))))
    model = split_shared_layers(spell_out_batch_norms(model))
    _warn_of_opaque_layers(model)
    return model


_WARNED = set()


def _warn_of_opaque_layers(model):
    """Warns of layers of the user's own classes that hold layers keras_qat would quantize."""
    hidden = {
        layer.name: sorted(
            {type(inner).__name__ for inner in layer.submodules if _quantizable(inner)}
        )
        for layer in model_layers(model)
        if is_opaque(layer)
    }
    hidden = {name: kinds for name, kinds in hidden.items() if kinds}
    message = (
        f"Layers {hidden} of model '{model.name}' are of your own classes and hold layers "
        "keras_qat quantizes, which it cannot reach inside their call: they stay float, in "
        "the QAT model and in the .tflite. To quantize them, build those blocks with the "
        "Functional API (layers called on tensors, not inside a Layer's call)."
    )
    # Once per model and process: create, validate and apply each check the model.
    if hidden and message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _quantizable(layer):
    return layer_spec(layer) is not None or isinstance(
        layer, (keras.layers.MultiHeadAttention, keras.layers.EinsumDense)
    )
