"""Which input quantizers move up to the tensor they read, so that every reader reads their output.

A tensor that feeds a quantized layer and also other layers (in MobileNetV2
and ResNet: a block's output, read by the next block's first convolution and
by its residual Add; in ResNet also by the shortcut convolution; a model
input read by a Dense and by an Add around it) is one int8 tensor in the
.tflite, on one grid. For the QAT model to compute what the file computes,
every reader must read the tensor rounded on that grid: one input quantizer
is applied where the tensor is produced, and every reader takes its output.
Several quantized readers share it when their `retrain_data_config` and
`fixed_min` are the same (the default config's case). When they differ in
bit width (AMCT's INT4 recipe keeps an average pooling INT8 beside INT4
convolutions reading the same tensor, as in Inception's cells), the file
holds the tensor on the widest readers' grid and requantizes it for the
others: the widest readers' quantizer is applied where the tensor is
produced and the narrower readers' quantizers round its output again, as the
file does. So with other differences at one width (a clip range the user
fixed for one reader): the first reader's quantizer goes first, and the
export's copy caps the others, so that the file QUANTIZEs the tensor onto
their grids rather than giving it two ranges. A Concatenate reader reads the
rounded tensor too: the file requantizes it to the concatenation's scale,
and the quantizer after the concatenation computes that requantization (see
`quantizers.input_layer`). Except where the tensor is on a grid already (a
quantized average pooling's output, as in DenseNet's transitions): the
converter refused to join a requantized tensor in a concatenation
(same-scale constraint), so the readers then read it as it is, each quantizer
requantizing it on its own. A model output that quantized layers read is
shared the same way: the file holds it once, on the shared grid, and
dequantizes it for the output (the model output stays the producer's, see
`WeightQuantizeConfig.output_on_reader`). So is a tensor that two or more
quantized layers read only behind layers that keep the scale (NASNet pads a
ReLU of a cell's input before each strided separable convolution): the
quantizer goes before those layers. A layer of one input called at several
places shares at each call where its readers share, the one quantizer at
every call (the export gives the op of each call that quantizer's grid);
tensors of producers called more than once are left to the export (see
`tflite.output_ranges`).
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.converter_facts import computed_in_float, keeps_scale
from keras_qat.layer_table import layer_spec, operand_keys


def _first_readers(quantized, settings, bits):
    """The input keys whose one quantizer goes first: the first widest reader's and its likes."""
    widest = max(bits[key] for key in quantized)
    leader = next(key for key in quantized if bits[key] == widest)
    return [key for key in quantized if bits[key] == widest and settings[key] == settings[leader]]


def _reading_keys(layer, reader):
    """The `operand_keys` of `reader`'s inputs that read `layer`'s output (its one call's).

    One key for a layer of one input; for a product, the key of each
    operand that is that output (the name, or `name/rhs`).
    """
    keys = operand_keys(reader.name, layer_spec(reader))
    if len(keys) == 1:
        return keys
    operands = tf.nest.flatten(reader.inbound_nodes[0].keras_inputs)
    return tuple(
        key
        for key, operand in zip(keys, operands, strict=True)
        if functional.producing_layer(operand) is layer
    )


def _quantized_behind(layer, reader, consumers, settings):
    """`(its producer, quantized layer)` pairs from `reader` of `layer` on, behind scale keepers.

    NASNet pads a cell's input before each strided separable convolution
    (one padding for two, where their kernels match). Ways that end
    elsewhere add nothing.
    """
    if reader is None or not functional.called_once(reader):
        return []
    if reader.name in settings:
        return [(layer, reader)]
    if not keeps_scale(reader):
        return []
    return [
        found
        for after in consumers.get(reader.name, [])
        for found in _quantized_behind(reader, after, consumers, settings)
    ]


def _on_a_grid(layer, sources, settings, planned):
    """Whether the file holds `layer`'s output on a grid already.

    It does behind layers that keep the scale, from a quantized average
    pooling (its input's grid) or from a producer whose quantizer is
    `planned` to go right after it.
    """
    while layer.name not in planned:
        if isinstance(layer, keras.layers.AveragePooling2D) and layer.name in settings:
            return True
        producers = sources.get(layer.name, [])
        if not keeps_scale(layer) or len(producers) != 1:
            return False
        layer = producers[0]
    return True


def _held_int8(layer, sources, settings, memo):
    """Whether the file holds `layer`'s output as int8 (not float, before or after a float op).

    A quantized layer's output is int8; a layer with weights left float, a
    layer the file computes in float and a model input are float; any other
    layer is int8 where one of its inputs is.
    """
    if layer.name not in memo:
        memo[layer.name] = False  # guards against revisiting
        producers = sources.get(layer.name, [])
        memo[layer.name] = layer.name in settings or (
            not layer.weights
            and not computed_in_float(layer)
            and any(_held_int8(p, sources, settings, memo) for p in producers)
        )
    return memo[layer.name]


def shared_input_readers(float_model, settings, bits):
    """Producer name -> the quantized layers among several readers of its output.

    Args:
        float_model: The flat float copy of the model (nested models inlined,
            BatchNormalization folded), layers named as in the original.
        settings: Input key of each quantized layer (`operand_keys`) ->
            what decides its input quantizer (its `retrain_data_config` and
            `fixed_min`); inputs with equal settings can share one.
        bits: Input key of each quantized layer -> the bit width of that input.

    Returns:
        A dict from producer layer name to the input keys (`operand_keys`:
        a layer's name, `name/rhs` for a product's second input) of the
        quantized layers reading its output (a tuple, in the order of
        `functional.consumers`, which names the "first" reader) whose
        one input quantizer is to be applied right after the producer; the
        producer's other quantized readers read that quantizer's output.
    """
    consumers = functional.consumers(float_model)
    sources = functional.sources(float_model)
    planned, int8, claimed = {}, {}, set()
    groups = {}  # input key -> the keys it shares a quantizer with
    # The keys of layers of one input called at several places (an ALBERT
    # block's projections, weights tied across blocks): they may share a
    # quantizer at each call, the same one at every call.
    repeated = {
        layer.name
        for layer in float_model.layers
        if layer.name in settings
        and not functional.called_once(layer)
        and len(operand_keys(layer.name, layer_spec(layer))) == 1
    }
    for layer in float_model.layers:
        readers = consumers.get(layer.name, [])
        quantized = [r for r in dict.fromkeys(readers) if r is not None and r.name in settings]
        if not all(functional.called_once(r) or r.name in repeated for r in quantized):
            continue
        # A product of the tensor with itself reads it twice, as two keys.
        keys = [key for reader in quantized for key in _reading_keys(layer, reader)]
        others = [r for r in readers if r is not None and r.name not in settings]
        # Quantized layers that read it only behind layers that keep the
        # scale, on two or more ways: the file holds it on one grid for all,
        # which the converter would take from one of them and requantize for
        # the others (NASNet's ReLU before pads of different sizes).
        branches = [_quantized_behind(layer, r, consumers, settings) for r in others]
        branches = [branch for branch in branches if branch]
        if not keys and len(branches) > 1 and functional.called_once(layer):
            keys = [
                key
                for branch in branches
                for producer, reader in branch
                for key in _reading_keys(producer, reader)
            ]
        # Readers a producer before this one shares a quantizer for already.
        keys = [key for key in keys if key not in claimed or key in repeated]
        # A weightless layer's int8 model output counts as a reader: the file holds that tensor.
        returned = 0
        if layer.name not in settings and _held_int8(layer, sources, settings, int8):
            returned = readers.count(None)
        if (
            not keys
            or len(keys) + len(others) + returned < 2
            or (
                any(isinstance(r, keras.layers.Concatenate) for r in readers)
                and _on_a_grid(layer, sources, settings, planned)
            )
            or not functional.called_once(layer)
            or len(tf.nest.flatten(layer.output)) != 1
        ):
            continue
        group = tuple(_first_readers(keys, settings, bits))
        if any(groups.get(key, group) != group for key in group if key in repeated):
            continue  # another group at another call: the calls would read two quantizers
        planned[layer.name] = group
        claimed.update(group)
        groups.update(dict.fromkeys(group, group))
    return planned


def returned_on_grid(float_model, settings, planned):
    """Names of the `planned` producers whose model output the file holds on the shared grid.

    They are model outputs of layers not quantized that the file holds as
    int8 (`_held_int8`): it dequantizes the shared quantizer's tensor for
    the output, so the QAT model returns that quantizer's output. What the
    file computes in float it returns in float.

    Args:
        float_model: As for `shared_input_readers`.
        settings: As for `shared_input_readers`.
        planned: Its result.

    Returns:
        A set of layer names.
    """
    outputs = {functional.producing_layer(t).name for t in float_model.outputs}
    sources = functional.sources(float_model)
    memo = {}
    return {
        name
        for name in planned
        if name in outputs
        and name not in settings
        and _held_int8(float_model.get_layer(name), sources, settings, memo)
    }
