"""Where the QAT model rounds the int8 tensors no input quantizer reads (`TrackedRangeQuantizer`).

A quantized convolution or dense layer writes an int8 tensor in the .tflite
(after the activation the converter fuses into it; before one it does not
fuse, such as GELU, which is an op of its own), and so do an attention
product and an Add of int8 tensors. When an input quantizer reads that
tensor (directly or behind layers that keep the scale, such as max pooling),
the file uses the quantizer's grid, which the QAT model already rounds on.
When none does (the logits; the input of a global average pooling, of an
Add or of an unfused activation; the output of a global average pooling,
an int8 MEAN, read by an Add or returned; the output of an activation op the file
computes on a range of its own, ELU, GELU, LEAKY_RELU or PRELU, which the
converter otherwise calibrates), the QAT model
rounds it on a tracked 8-bit range: inside the layer's wrapper, after its
own activation; or, where a ReLU/ReLU6 layer follows that the converter
fuses into the op (its range then comes from the ReLU's output, not from a
fake-quant before it), in an `OutputQuantizeLayer` after the ReLU, as after
an Add. An add or multiply of an int8 tensor and a number (`x + 3`, `x * (1 / 6)`:
MobileNetV3's hard sigmoid gate, unless the converter fuses it into a hard
swish) is an int8 op too, and is rounded so where no quantizer reads it.
A tensor read by an input quantizer and by other layers gets that
quantizer in front of all its readers (`shared_inputs`). The inputs of a
Concatenate, a Maximum or a Minimum are written on its one scale: where no
input quantizer reads its output directly (a ReLU after it is an int8 RELU
of its own, which requantizes, as in NASNet's cells), that output is
rounded, on a tracked range of its own; so is such a ReLU's output (or a
ReLU's of a tensor other layers read too), where no quantizer reads it
(`_relu_op`). A linear Dense read by a ReLU and by other layers is two
FULLY_CONNECTED in the file, the ReLU fused into one (`_fused_copies`): the
ReLU reads the Dense's sums, and an `OutputQuantizeLayer` rounds them for
the other readers.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.converter_facts import (
    COMPARISONS,
    MEANS,
    activation_bounds,
    computed_in_float,
    fused_activation,
    fuses_into_copies,
    keeps_scale,
    resizes_bilinearly,
    scalar_operation,
)
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers.file_activation import FILE_ACTIVATIONS, MULTIPLYING_ACTIVATIONS
from keras_qat.quantizers.hard_swish import hard_swishes
from keras_qat.quantizers.input_layer import reading_nodes


def _readers(name, consumers):
    """The layers reading `name`'s output, behind scale-keeping layers (None: a model output)."""
    readers = []
    for consumer in consumers.get(name, []):
        if keeps_scale(consumer):
            readers.extend(_readers(consumer.name, consumers))
        else:
            readers.append(consumer)
    return readers


# Layers the file computes as an int8 op with one scale for its inputs and
# output (CONCATENATION, MAXIMUM, MINIMUM): the converter writes the inputs on
# the output's scale.
_ONE_SCALE = (keras.layers.Concatenate, *COMPARISONS)


def _fused_end(layer, consumers):
    """The layer whose output is the tensor the file holds: `layer`, or a ReLU fused into it.

    The converter fuses no activation into a CONCATENATION, MAXIMUM,
    MINIMUM or MEAN: a ReLU after one is a RELU op of its own, which
    requantizes its int8 output.
    """
    after = consumers.get(layer.name, [])
    if (
        not isinstance(layer, (*_ONE_SCALE, *MEANS))
        and len(after) == 1
        and after[0] is not None
        and functional.called_once(after[0])
        and fused_activation(after[0])
    ):
        return after[0]
    return layer


def _fused_copies(layer, consumers):
    """The activation layers among several readers of `layer`'s output that fuse into copies of it.

    Each such reader takes the op's sums unrounded (`fuses_into_copies`),
    and only the others read the op's own int8 output.
    """
    readers = consumers.get(layer.name, [])
    linear = activation_bounds(layer) == (None, None)
    if len(readers) < 2 or not linear or not fuses_into_copies(layer):
        return []
    return [
        reader
        for reader in readers
        if reader is not None and functional.called_once(reader) and fused_activation(reader)
    ]


def _relu_op(layer, sources, consumers):
    """Whether the file computes activation layer `layer` as an op of its own, on its own range.

    That is a ReLU (ReLU6) the converter does not fuse into the op before
    it: one after a Concatenate, Maximum or Minimum, or reading a tensor
    that other layers read too. Its RELU op requantizes onto an output
    range of its own where no quantizer gives it one.
    """
    producers = sources.get(layer.name, [])
    if not (fused_activation(layer) and functional.called_once(layer) and len(producers) == 1):
        return False
    return _fused_end(producers[0], consumers) is not layer


def _joined_among_readers(end, consumers, enabled):
    """Whether a Concatenate reads `end`'s output beside other layers, and no quantizer does.

    Directly, or behind layers that keep the scale (a global max pooling
    beside a global average pooling, joined). The file writes the output
    on the concatenation's one scale, and the
    other readers (an Add, as in NASNet's reduction cells) read it there.
    With a quantizer among the readers, it is on that quantizer's grid
    instead (see `input_layer._scale_giver`).
    """
    readers = consumers.get(end.name, [])
    behind = _readers(end.name, consumers)
    # One Concatenate joining each call of a layer called at several places is one.
    joins = list({id(r): r for r in behind if isinstance(r, _ONE_SCALE)}.values())
    return (
        len(readers) > 1
        and None not in behind
        and len(joins) == 1
        and isinstance(joins[0], keras.layers.Concatenate)
        and not any(reader.name in enabled for reader in behind)
    )


def _call_returned(layer, node_index, outputs):
    """Whether the output of `layer`'s call `node_index` is among `outputs` (tensor ids)."""
    node = layer.inbound_nodes[node_index]
    return any(id(tensor) in outputs for tensor in tf.nest.flatten(node.outputs))


def _call_readers(layer, node_index, outputs):
    """The layers reading the output of `layer`'s call `node_index`, behind scale-keeping layers.

    `None` stands for a model output (`outputs`: the ids of the model's
    output tensors).
    """
    readers = [None] if _call_returned(layer, node_index, outputs) else []
    for read in reading_nodes(layer, node_index):
        reader = read.outbound_layer
        if keeps_scale(reader):
            readers.extend(_call_readers(reader, reader.inbound_nodes.index(read), outputs))
        else:
            readers.append(reader)
    return readers


def _fused_call_activation(layer, node_index, outputs):
    """The activation layer the converter fuses into the op of `layer`'s call, or `None`.

    That is the call's one reader, a `fused_activation` called once, where
    the call's output is no model output (`_fused_end`, call by call).
    """
    reads = reading_nodes(layer, node_index)
    if _call_returned(layer, node_index, outputs) or len(reads) != 1:
        return None
    reader = reads[0].outbound_layer
    return reader if functional.called_once(reader) and fused_activation(reader) else None


def _averaged_beside_a_reader(end, outputs, enabled):
    """Whether a global average pooling reads `end`'s output beside one quantizer.

    That quantizer reads it behind layers that keep the scale (a global
    max pooling): the file writes the output on its grid
    (`input_layer._scale_giver`) and the MEAN averages the levels there.
    Each call of a layer called at several places is read so, or by that
    one quantizer alone (a convolution applied twice, then pooled so).
    """
    averaged = False
    for index in range(len(end.inbound_nodes)):
        behind = _call_readers(end, index, outputs)
        quantized = {id(r) for r in behind if r is not None and r.name in enabled}
        direct = [read.outbound_layer for read in reading_nodes(end, index)]
        mean = any(isinstance(r, MEANS) and r.name not in enabled for r in direct)
        joined = any(isinstance(r, _ONE_SCALE) for r in behind)
        if len(quantized) != 1 or None in behind or joined or not (mean or len(behind) == 1):
            return False
        averaged = averaged or mean
    return averaged


def _rounding_by_call(layer, outputs, enabled):
    """Where the file rounds each call of `layer`: `(calls rounded elsewhere, activations)`.

    A call's output is rounded elsewhere where the file writes it on a
    reader's grid (a quantizer among `enabled` reads it, or a Concatenate,
    Maximum or Minimum alone: `_rounded_by_no_quantizer`, call by call), or
    where the converter fuses an activation into the call's op: that
    activation's output is then the tensor the file holds, which
    `activations` (activation name -> `(floor, ceiling)`) rounds on a range
    of its own where no quantizer reads it. `None` where a call's tensor is
    joined by a Concatenate beside other layers and read by no quantizer
    (`_joined_among_readers`, which is planned per layer).
    """
    elsewhere, activations = set(), {}
    for index in range(len(layer.inbound_nodes)):
        end, end_index = layer, index
        activation = _fused_call_activation(layer, index, outputs)
        if activation is not None:
            end, end_index = activation, 0
            elsewhere.add(index)
        readers = _call_readers(end, end_index, outputs)
        quantized = [r for r in readers if r is not None and r.name in enabled]
        if quantized or any(isinstance(r, _ONE_SCALE) for r in readers):
            if not quantized and len(readers) > 1:
                return None
            elsewhere.add(index)
        elif activation is not None:
            activations[activation.name] = activation_bounds(activation)
    return elsewhere, activations


def _read_in_float(layer, consumers, enabled):
    """Whether every reader of `layer`'s output computes in float in the file.

    Such as a Dense with `retrain_enable: false`, or an ELU: the file
    computes a weightless layer before them in float too
    (`tflite.float_front.float_kinds`).
    """
    readers = _readers(layer.name, consumers)
    return bool(readers) and all(
        reader is not None
        and (computed_in_float(reader) or (reader.weights and reader.name not in enabled))
        for reader in readers
    )


def _rounded_by_no_quantizer(end, consumers, enabled):
    """Whether no input quantizer reads `end`'s output, nor a Concatenate, Maximum or Minimum.

    Those have one scale for all their inputs: the file writes them on it,
    which the quantizer reading the layer's output, or its own output
    quantizer, rounds on (a Concatenate's reader slice by slice).
    """
    readers = _readers(end.name, consumers)
    return not any(
        isinstance(reader, _ONE_SCALE) or (reader is not None and reader.name in enabled)
        for reader in readers
    )


class OutputPlan(NamedTuple):
    """Where the QAT model rounds an int8 tensor of the file that no input quantizer reads.

    Attributes:
        wrappers: Quantized layer name -> `(floor, ceiling)` of the output
            quantizer inside its wrapper, after its own activation (`None`
            where unbounded).
        tensors: Layer name -> `(floor, ceiling)` of an `OutputQuantizeLayer`
            right after that layer: a ReLU the converter fuses into the
            quantized layer or Add before it, such an Add itself, or an
            activation op of its own (`_own_range_activation`).
        activations: `Activation` (or `Softmax`) layer name -> its
            activation, for those the file computes in int8 on a fixed
            output grid (sigmoid, swish, tanh, softmax: `FileActivation`).
        scalar_operations: TFOpLambda layer name -> `(kind, constant)`, for
            an add or multiply of an int8 tensor and a number, which the
            file computes as an int8 op writing on a range of its own
            (`FileScalarOperation`).
        swish_products: Names of the TFOpLambda products `x * hard
            sigmoid(x)` (a `HARD_SWISH` in the file: a `FileMultiply`).
        resized_on_reader: Names of the bilinear resize layers the file
            computes on the grid of the quantizer reading their output
            (`_resized_on_reader`): a `FileResizeBilinear` or `FileResizing`
            after a `ReaderGridLayer`.
        read_raw: Names of the activation layers that read the unrounded
            output of the quantized layer before them (`_fused_copies`),
            which an `OutputQuantizeLayer` rounds for its other readers.
        joined_on_grid: Names of the layers whose int8 output a
            Concatenate and other layers read (`_joined_among_readers`), or
            a global average pooling beside a quantizer
            (`_averaged_beside_a_reader`): a `ReaderGridLayer` after each
            rounds it on the Concatenate's grid, or the quantizer's.
        compared_on_reader: Names of the Maximum and Minimum layers of int8
            operands (`_compared_on_reader`): a `ReaderGridLayer` before each
            operand rounds it on the grid of the quantizer after the layer.
        unrounded_calls: Name of a quantized layer called at several places -> the
            indexes of its calls (in `inbound_nodes`) whose output is rounded
            elsewhere (`_rounding_by_call`): the file's op writes those on a
            reader's grid, or fuses an activation into them, and they skip
            the output quantizer in `wrappers` (`QatWrapper`'s
            `round_output`).
    """

    wrappers: dict
    tensors: dict
    activations: dict
    scalar_operations: dict
    swish_products: set
    resized_on_reader: set
    read_raw: set
    joined_on_grid: set
    compared_on_reader: set
    unrounded_calls: dict


# Weightless layers the file computes in int8 on an output range of their own.
_REQUANTIZING = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
)


# Activation layers the file computes as int8 ops of their own, not fused into
# the op before them (an `Activation` of any activation the converter does not
# fuse, unless `FILE_ACTIVATIONS` simulates it).
_ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


def _softmax_over_one_axis(layer):
    """Whether `layer` is a `Softmax` over one axis, called once without a mask.

    The file computes it as an int8 SOFTMAX on its fixed grid, between
    TRANSPOSEs where the axis is not the last (one over the last axis is an
    `Activation` since the door: `op_layers`).
    """
    if not isinstance(layer, keras.layers.Softmax) or not functional.called_once(layer):
        return False
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(axes) == 1 and layer.inbound_nodes[0].call_kwargs.get("mask") is None


def _own_range_activation(layer):
    """Whether the file computes `layer` as an activation op writing on a range of its own.

    Such an op (ELU, LEAKY_RELU, PRELU, GELU, ...) writes its output on a scale
    of its own: the converter's calibration, unless a fake-quant reads the
    output directly.
    """
    if not isinstance(layer, _ACTIVATION_LAYERS) or fused_activation(layer):
        return False
    return layer.get_config().get("activation") not in FILE_ACTIVATIONS


def _scalar_call(layer):
    """`(kind, constant)` of `layer`'s one call when it is a `scalar_operation`, else `None`.

    A division by `c` is a multiply by `1 / c` (in float32), as the
    converter writes it.
    """
    if not functional.called_once(layer):
        return None
    node = layer.inbound_nodes[0]
    operation = scalar_operation(layer, node.call_args, node.call_kwargs)
    if operation is None:
        return None
    kind, constant, _ = operation
    if kind == "divide":
        return "multiply", np.float32(1) / constant
    return kind, constant


def _scalar_operation(layer, fused, consumers):
    """`(kind, constant)` of an add or multiply of a tensor and a number that `layer` computes.

    `None` for other layers, for a layer called more than once, for the
    layers in `fused`, which the converter fuses into a hard swish, and
    where a TFOpLambda op reads the result that is neither a fused
    activation nor such an operation (its int8 op the QAT model does not
    know).
    """
    operation = _scalar_call(layer)
    if layer.name in fused or operation is None:
        return None
    for reader in consumers.get(layer.name, []):
        known = fused_activation(reader) or _scalar_call(reader) is not None
        if hasattr(reader, "symbol") and not known:
            return None
    return operation


def _after_a_quantizer(name, sources, enabled, memo):
    """Whether a quantized layer precedes `name` (else it runs in float, before the first one)."""
    if name not in memo:
        memo[name] = False  # guards against revisiting
        memo[name] = name in enabled or any(
            _after_a_quantizer(p.name, sources, enabled, memo) for p in sources.get(name, [])
        )
    return memo[name]


def _writes_int8(layer, activation, enabled, sources, memo):
    """Whether the file computes `layer` as an int8 op with an output scale of its own.

    `activation` is the layer's `activation` argument (None for layers without one).
    """
    if layer.name in enabled:
        # Weighted layers and the attention products are int8 ops (an unfused
        # activation is split off by the walker, an op of its own after them);
        # an Embedding's output is its rows, already on the weights' grid. The
        # calls of one called at several places (a siamese tower's) share
        # its wrapper's output range, which the export gives each call's op.
        spec = layer_spec(layer)
        return spec is not None and spec.operands > 0 and (spec.has_weights or spec.operands > 1)
    if not functional.called_once(layer):
        return False
    # Swish is LOGISTIC then MUL in the file, and the MUL writes on a range of its own.
    # A Concatenate's (Maximum's, Minimum's) one scale is its own where no input
    # quantizer gives it one; so is a MEAN's output scale.
    swish = activation in MULTIPLYING_ACTIVATIONS
    joins = isinstance(layer, (*_ONE_SCALE, *MEANS))
    return (isinstance(layer, _REQUANTIZING) or swish or joins) and all(
        _after_a_quantizer(p.name, sources, enabled, memo) for p in sources[layer.name]
    )


def _compared_on_reader(layer, sources, enabled, memo):
    """Whether the file's `MAXIMUM` or `MINIMUM` for `layer` compares int8 operands on one scale.

    That is the scale of the quantizer reading its output, or its own
    output range (the converter fuses no activation into the op): each
    operand's op writes on it, or the file requantizes the operand onto it
    from the grid of another reader (a `QUANTIZE`, with its own rounding).
    """
    return (
        isinstance(layer, COMPARISONS)
        and functional.called_once(layer)
        and all(_after_a_quantizer(p.name, sources, enabled, memo) for p in sources[layer.name])
    )


def _resized_on_reader(layer, consumers, sources, enabled, shared, memo):
    """Whether the file's `RESIZE_BILINEAR` for `layer` reads and writes its reader's grid.

    That is a bilinear resize, called once, whose output one input
    quantizer reads: one shared by its readers (in `shared`), or one
    reached behind layers that keep the scale or other such resizes (each
    the one reader of the tensor before it), or the one reading a
    Concatenate of it, or the
    Concatenate's own tracked range: the converter gives the op that
    quantizer's scale, and the layer before writes on it. Before the first
    quantizer too: the converter keeps no such same-scale op float (a
    denylist leaves it int8), so the file quantizes the float tensor before
    it onto that grid.
    """
    if not (functional.called_once(layer) and resizes_bilinearly(layer)):
        return False
    if layer.name in shared:
        return True
    reader = layer
    while True:
        after = consumers.get(reader.name, [])
        if len(after) != 1 or after[0] is None:
            return False
        reader = after[0]
        # A resize keeps the grid too, when it is itself on its reader's.
        if not (keeps_scale(reader) or resizes_bilinearly(reader)):
            break
    if not isinstance(reader, keras.layers.Concatenate):
        return reader.name in enabled
    after = consumers.get(reader.name, [])
    if len(after) == 1 and after[0] is not None and after[0].name in enabled:
        return True
    own_range = _writes_int8(reader, None, enabled, sources, memo)
    return own_range and _rounded_by_no_quantizer(reader, consumers, enabled)


def plan_output_quantizers(float_model, enabled, shared=()):
    """The int8 tensors of the file that no input quantizer reads, and where to round them.

    Those are the outputs of quantized convolution and dense layers and of
    Add-like layers, Concatenates and adds or multiplies by a number after
    them (behind a ReLU the converter fuses in) that no input quantizer and
    no Concatenate reads.

    Args:
        float_model: The flat float copy of the model (nested models inlined,
            BatchNormalization folded), layers named as in the original.
        enabled: Names of the layers that are quantized.
        shared: Names of the layers whose output one input quantizer,
            shared by its readers, reads right after them (the keys of
            `shared_inputs.shared_input_readers`). Defaults to none.

    Returns:
        An `OutputPlan`, in model order.
    """
    consumers = functional.consumers(float_model)
    sources = functional.sources(float_model)
    outputs = {id(tensor) for tensor in float_model.outputs}
    memo = {}
    plan = OutputPlan({}, {}, {}, {}, set(), set(), set(), set(), set(), {})
    swishes = hard_swishes(float_model)
    fused = set().union(*swishes.values())
    for layer in float_model.layers:
        if _resized_on_reader(layer, consumers, sources, enabled, shared, memo):
            plan.resized_on_reader.add(layer.name)
        if _compared_on_reader(layer, sources, enabled, memo):
            plan.compared_on_reader.add(layer.name)
    # Their `ReaderGridLayer` reads the layer before them.
    read = enabled | plan.resized_on_reader
    for layer in float_model.layers:
        activation = layer.get_config().get("activation")
        after = layer.name in sources and all(
            _after_a_quantizer(p.name, sources, enabled, memo) for p in sources[layer.name]
        )
        scalar = _scalar_operation(layer, fused, consumers)
        if scalar is not None and after:
            plan.scalar_operations[layer.name] = scalar
        if layer.name in swishes and hasattr(layer, "symbol") and after:
            plan.swish_products.add(layer.name)
        if _softmax_over_one_axis(layer):
            activation = "softmax"
        elif not isinstance(layer, keras.layers.Activation):
            activation = None
        if activation in FILE_ACTIVATIONS and _after_a_quantizer(
            layer.name, sources, enabled, memo
        ):
            plan.activations[layer.name] = activation
        if (
            _own_range_activation(layer)
            and functional.called_once(layer)
            and _after_a_quantizer(layer.name, sources, enabled, memo)
            and _rounded_by_no_quantizer(layer, consumers, read)
        ):
            plan.tensors[layer.name] = (None, None)
            continue
        if (
            layer.name not in plan.read_raw
            and _relu_op(layer, sources, consumers)
            and _after_a_quantizer(layer.name, sources, enabled, memo)
            and _rounded_by_no_quantizer(layer, consumers, read)
        ):
            plan.tensors[layer.name] = activation_bounds(layer)
            continue
        written = layer.name in plan.scalar_operations or layer.name in plan.swish_products
        if not (written or _writes_int8(layer, activation, enabled, sources, memo)):
            continue
        if isinstance(layer, MEANS) and _read_in_float(layer, consumers, enabled):
            continue
        end = _fused_end(layer, consumers)
        weighted = end is layer and layer.name in enabled and layer_spec(layer).has_weights
        apart = _fused_copies(layer, consumers) if weighted else []
        for reader in apart:
            plan.read_raw.add(reader.name)
            if _rounded_by_no_quantizer(reader, consumers, read):
                plan.tensors[reader.name] = activation_bounds(reader)
        if (
            weighted
            and not apart
            and layer.name not in shared
            and not functional.called_once(layer)
        ):
            # Each call is rounded where the file writes it: the calls rounded
            # nowhere else on the output range they share.
            rounding = _rounding_by_call(layer, outputs, read)
            elsewhere, activations = rounding or (set(), {})
            calls = len(layer.inbound_nodes)
            if rounding is not None and (activations or len(elsewhere) < calls):
                plan.tensors.update(activations)
                if len(elsewhere) < calls:
                    plan.wrappers[layer.name] = activation_bounds(layer)
                if elsewhere:
                    plan.unrounded_calls[layer.name] = elsewhere
                continue
        readers = consumers.get(layer.name, [])
        if not functional.called_once(layer) and any(map(fused_activation, filter(None, readers))):
            continue  # each call's op fuses its own activation, not planned call by call here
        if not _rounded_by_no_quantizer(end, consumers, read):
            # Where its readers share a quantizer after it, the pooling reads that quantizer's.
            averaged = end.name not in shared and _averaged_beside_a_reader(end, outputs, read)
            if averaged or _joined_among_readers(end, consumers, read):
                plan.joined_on_grid.add(end.name)
            continue
        if apart:
            # The op's own output, where readers other than those activations read it.
            if len(apart) < len(consumers[layer.name]):
                plan.tensors[layer.name] = (None, None)
        elif weighted:
            plan.wrappers[layer.name] = activation_bounds(layer)
        else:
            plan.tensors[end.name] = activation_bounds(end)
    return plan
