"""Keeping float in the .tflite what the QAT model computes in float ahead of its quantizers.

A model can compute something before its first quantized layer: a
`Normalization` of raw features, a signal front end (LOG, DIV). The QAT
model runs it in float; the converter, given representative data, would
quantize the model input with one int8 scale and run the front end in int8
(features spanning 0.1 to 100 lose their small ones; an int8 DIV by a value
that rounds to 0 fails to run). The ops of layers no quantizer precedes are
therefore denylisted from quantization: they stay float in the file, and the
file quantizes where the QAT model does. So are the layers the file computes
in float wherever they stand (`converter_facts.computed_in_float`).
"""

from tensorflow.lite.python import convert as tflite_convert
from tensorflow.lite.tools import flatbuffer_utils

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.converter_facts import computed_in_float, is_opaque
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers import FileActivation, OutputQuantizeLayer, QatWrapper
from keras_qat.quantizers.file_activation import FLOAT_ACTIVATION_SCOPE
from keras_qat.tflite.fixed_quant import FixedInputQuantizer
from keras_qat.tflite.float_layers import float_layers
from keras_qat.tflite.ops import computes_layers, op_name
from keras_qat.tflite.output_ranges import RangedOutput


def float_front(model):
    """Names of the layers of `model` that no input quantizer precedes.

    Args:
        model: The export copy (flat Functional; its input quantizers are
            the layers with an `input_step` method).

    Returns:
        A set of layer names (model inputs excluded).
    """
    sources = functional.sources(model)
    quantized = set()
    for layer in model.layers:  # topological order
        if hasattr(layer, "input_step") or any(
            producer.name in quantized for producer in sources.get(layer.name, [])
        ):
            quantized.add(layer.name)
    return {
        layer.name
        for layer in model.layers
        if layer.name not in quantized and not isinstance(layer, keras.layers.InputLayer)
    }


# The quantizers of the export copy, which end a float region.
_QUANTIZERS = (FixedInputQuantizer, OutputQuantizeLayer, RangedOutput, FileActivation)


def float_kinds(model):
    """Names of the layers of `model` the file computes in float wherever they stand.

    Those are the `converter_facts.computed_in_float` layers, layers of the
    user's own classes with weights (`converter_facts.is_opaque`), the
    attention products with `retrain_enable: false`, and the weightless layers after
    them or after a layer with `retrain_enable: false` up to the next quantizer
    (a pooling of a normalised tensor): the QAT model computes those in float
    on float inputs too. So are the weightless
    layers whose every reader computes in float, a layer with
    `retrain_enable: false` among them (the global pooling before a
    classifier left float): the QAT model computes them in float on their
    rounded input, where the converter wrote an int8 MEAN that rounds. So
    are the float activations of quantized model outputs, named by their
    scope (`layer/FLOAT_ACTIVATION_SCOPE`).

    Args:
        model: The export copy.

    Returns:
        A set of layer names.
    """
    sources = functional.sources(model)
    disabled = set(float_layers(model))
    found = set()
    for layer in model.layers:  # topological order
        spec = layer_spec(layer)
        disabled_product = (
            spec is not None
            and spec.operands > 1
            and not any(
                isinstance(producer, FixedInputQuantizer) for producer in sources[layer.name]
            )
        )
        if (
            computed_in_float(layer)
            or is_opaque(layer)
            or disabled_product
            or (
                layer.name in sources
                and all(producer.name in found | disabled for producer in sources[layer.name])
                and not layer.weights
                and not isinstance(layer, _QUANTIZERS)
            )
        ):
            found.add(layer.name)
    in_float = found | disabled
    consumers = functional.consumers(model)
    for layer in reversed(model.layers):
        readers = consumers.get(layer.name, [])
        if (
            readers
            and all(reader is not None and reader.name in in_float for reader in readers)
            and not layer.weights
            and not isinstance(layer, (*_QUANTIZERS, keras.layers.InputLayer))
        ):
            found.add(layer.name)
            in_float.add(layer.name)
    return found | _float_output_activations(model)


def _float_output_activations(model):
    """The scopes of the float activations of quantized model outputs, as `float_kinds` names.

    A wrapper's `ActivatedOutputQuantizer` computes them under
    `FLOAT_ACTIVATION_SCOPE`, in the wrapper's own scope.
    """
    return {
        f"{layer.name}/{FLOAT_ACTIVATION_SCOPE}"
        for layer in model.layers
        if isinstance(layer, QatWrapper) and layer.activates_in_float
    }


def _denylisted_nodes(calibrated, model_name, layer_names):
    """Names of the ops of `layer_names` in a calibrated .tflite.

    An op writing a model output is named by that output, not by the layer:
    it is one of them where it reads what one of them wrote (a softplus
    head's LOG after its EXP and ADD), or what the layer of a float
    activation scope wrote (a GELU head's one GELU).
    """
    suffix = f"/{FLOAT_ACTIVATION_SCOPE}"
    owners = [name.removesuffix(suffix) for name in layer_names if name.endswith(suffix)]
    tflite = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    names = []
    for subgraph in tflite.subgraphs:
        written, before = set(), set()  # tensors their ops write, those of `owners`' ops
        for op in subgraph.operators:  # in execution order
            name = op_name(subgraph, op)
            last = set(op.outputs) <= set(subgraph.outputs) and (written | before) & set(op.inputs)
            if computes_layers(name, model_name, layer_names) or last:
                names.append(name)
                written.update(op.outputs)
            elif computes_layers(name, model_name, owners):
                before.update(op.outputs)
    return names


def convert_with_float_front(converter, model, in_float):
    """Converts with `converter`, leaving float the ops of `model`'s `float_front` and `in_float`.

    Args:
        converter: A `TFLiteConverter` of `model`, with its optimizations and
            representative dataset set (float input and output: with integer
            ones use `converter.convert()`).
        model: The export copy.
        in_float: Names of further layers to keep float (`float_kinds`).

    Returns:
        The .tflite flatbuffer (bytes).
    """
    converter._experimental_calibrate_only = True  # quantized below, with a denylist
    calibrated = converter.convert()
    nodes = _denylisted_nodes(calibrated, model.name, float_front(model) | in_float)
    return tflite_convert.mlir_quantize(calibrated, denylisted_nodes=nodes)
