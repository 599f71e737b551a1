"""Which quantized layers also round their output (`TrackedRangeQuantizer`), and within what bounds.

A quantized convolution or dense layer writes an int8 tensor in the .tflite
(after the activation the converter fuses into it). When an input quantizer
reads that tensor (directly or behind layers that keep the scale, such as
max pooling), the file uses the quantizer's grid, which the QAT model
already rounds on. When none does (the logits; the input of a global average
pooling or an Add), the layer gets an output quantizer inside
its wrapper, after the layer's own activation, so that it rounds
where the file rounds. A ReLU or ReLU6 layer right after it, which the
converter fuses into the op, bounds the tracked range to [0, inf) or [0, 6]:
rounding on such a range commutes with the ReLU. A tensor read by an input
quantizer and by other layers gets that quantizer in front of all its
readers (`shared_inputs`); those joined by a Concatenate (whose inputs the
file requantizes to one common scale) are left to the export (see
`tflite.output_ranges`).
"""

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.converter_facts import (
    SCALE_KEEPING,
    activation_bounds,
    fused_activation,
    own_activation_fuses,
)
from keras_qat.layer_table import layer_spec


def _readers(name, consumers):
    """The layers reading `name`'s output, behind scale-keeping layers (None: a model output)."""
    readers = []
    for consumer in consumers.get(name, []):
        if isinstance(consumer, SCALE_KEEPING):
            readers.extend(_readers(consumer.name, consumers))
        else:
            readers.append(consumer)
    return readers


def output_quantized_layers(float_model, enabled):
    """The quantized layers whose output the file holds in int8 with no input quantizer on it.

    Args:
        float_model: The flat float copy of the model (nested models inlined,
            BatchNormalization folded), layers named as in the original.
        enabled: Names of the layers that are quantized.

    Returns:
        Layer name -> `(floor, ceiling, tensor)`: the bounds of its tracked
        range (`None` where unbounded) and the name of the layer whose output
        is the tensor the file holds (the layer itself, or the fused ReLU
        after it), in model order.
    """
    consumers = functional.consumers(float_model)
    planned = {}
    for layer in float_model.layers:
        spec = layer_spec(layer)
        if layer.name not in enabled or spec is None or not spec.has_weights:
            continue
        if not own_activation_fuses(layer) or not functional.called_once(layer):
            continue  # the file computes an unfused activation on a tensor of its own
        end = layer
        after = consumers.get(layer.name, [])
        if (
            len(after) == 1
            and after[0] is not None
            and functional.called_once(after[0])
            and fused_activation(after[0])
        ):
            end = after[0]
        readers = _readers(end.name, consumers)
        if any(isinstance(reader, keras.layers.Concatenate) for reader in readers):
            continue  # one scale for all its inputs: the file requantizes them to it
        if not any(reader is not None and reader.name in enabled for reader in readers):
            floor, ceiling = activation_bounds(layer)
            if end is not layer:
                floor, ceiling = activation_bounds(end)
            planned[layer.name] = (floor, ceiling, end.name)
    return planned
