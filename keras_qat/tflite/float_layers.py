"""Running in float, in the .tflite, the layers the QAT model leaves float.

A layer with `retrain_enable: false` has no quantizer in the QAT model: it
computes in float32 on float weights. Between tensors that other quantizers
give int8 ranges the converter still makes it an int8 op, with weights it
quantizes itself, and its denylist does not reach such ops. `run_in_float`
rewrites those ops after conversion: DEQUANTIZE, the op on float32 weights
and bias, QUANTIZE (none where only DEQUANTIZEs read the op: a classifier
left float writes the model output in float). The float weights are taken from a plain float
conversion of the same model, in which the op has the same name and the same
fusions (a BatchNormalization folded into it, say). An op that writes a model
output is named after the signature's output (`StatefulPartitionedCall:0`),
not after its layer; its weights and bias still are (`_names`).
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from keras_qat.converter_facts import unquantized_with_weights
from keras_qat.tflite.ops import (
    BIASED_OPS,
    builtin_code,
    code_of,
    computes_layers,
    data_input,
    op_name,
)

_OPS = schema.BuiltinOperator


def opcode(tflite, code):
    """Index of `code` in the model's operator codes, added if missing."""
    for index, entry in enumerate(tflite.operatorCodes):
        if code_of(entry) == code:
            return index
    entry = schema.OperatorCodeT()
    entry.builtinCode = code
    entry.deprecatedBuiltinCode = min(code, 127)
    entry.version = 1
    tflite.operatorCodes.append(entry)
    return len(tflite.operatorCodes) - 1


def float_tensor(tflite, subgraph, like, name, data=None):
    """Appends a float32 tensor shaped like `like` (a constant when `data` is given)."""
    tensor = schema.TensorT()
    tensor.shape = list(like.shape)
    tensor.shapeSignature = like.shapeSignature
    tensor.type = schema.TensorType.FLOAT32
    tensor.name = name.encode()
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.ascontiguousarray(data, np.float32).view(np.uint8).ravel()
    tflite.buffers.append(buffer)
    tensor.buffer = len(tflite.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def drop_round_trips(tflite, subgraph, operators, made_float):
    """`operators` with the DEQUANTIZEs of `made_float` tensors gone, and QUANTIZEs left unread.

    Args:
        tflite: The `.tflite` as a flatbuffer object.
        subgraph: The subgraph of `operators`.
        operators: Its new operator list.
        made_float: Int8 tensor -> the float tensor that now holds its values
            (the int8 one is written by a QUANTIZE of it).

    Returns:
        The operators to keep; readers of the DEQUANTIZEs read the float
        tensors instead. A float tensor a model output DEQUANTIZEd becomes
        that output's tensor, which the file's signature names.
    """
    alias, rename, kept = {}, {}, []
    outputs = set(subgraph.outputs)
    for op in operators:
        if builtin_code(tflite, op) == _OPS.DEQUANTIZE and op.inputs[0] in made_float:
            twin = made_float[op.inputs[0]]
            if op.outputs[0] in outputs and twin not in rename:
                rename[twin] = op.outputs[0]
            else:
                alias[op.outputs[0]] = twin
            continue
        kept.append(op)

    def reading(index):
        index = alias.get(index, index)
        return rename.get(index, index)

    for op in kept:
        op.inputs = [reading(i) for i in op.inputs]
        op.outputs = [rename.get(i, i) for i in op.outputs]
    subgraph.outputs = [reading(i) for i in subgraph.outputs]
    read = {i for op in kept for i in op.inputs} | set(subgraph.outputs)
    return [
        op
        for op in kept
        if not (builtin_code(tflite, op) == _OPS.QUANTIZE and op.outputs[0] not in read)
    ]


def _names(subgraph, op, code):
    """The names a conv/dense op goes by: its `op_name`, then its other inputs' than the data."""
    position = data_input(code)
    return [op_name(subgraph, op)] + [
        subgraph.tensors[index].name.decode()
        for slot, index in enumerate(op.inputs)
        if index >= 0 and slot != position
    ]


def _float_constants(float_file):
    """Each of an op's `_names` -> the float32 values of the op's constant inputs, by position."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_file))
    constants = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = builtin_code(model, op)
            if code in BIASED_OPS:
                values = {}
                for position, index in enumerate(op.inputs):
                    tensor = subgraph.tensors[index] if index >= 0 else None
                    data = model.buffers[tensor.buffer].data if tensor is not None else None
                    if data is not None and tensor.type == schema.TensorType.FLOAT32:
                        values[position] = np.frombuffer(bytes(data), np.float32)
                constants.update(dict.fromkeys(_names(subgraph, op, code), values))
    return constants


def float_layers(model):
    """Names of the layers of `model` with weights that are not quantized, of a kind the file runs.

    That is a quantizable kind (`retrain_enable: false`), or a convolution
    keras_qat does not quantize (a `SeparableConv1D`, say): the QAT model
    computes them in float.

    Args:
        model: The export copy.

    Returns:
        A list of layer names.
    """
    return [layer.name for layer in model.layers if unquantized_with_weights(layer)]


def run_in_float(tflite, float_file, model_name, layer_names):
    """Rewrites, in place, the int8 conv/dense ops of `layer_names` to compute in float.

    Args:
        tflite: The int8 `.tflite` as a flatbuffer object.
        float_file: The float `.tflite` (bytes) of the same model.
        model_name: The converted Keras model's name (op names start with it).
        layer_names: Names of the layers to run in float.

    Returns:
        `(missed, twins)`: the names of the int8 ops of those layers that
        could not be rewritten (no op of that name with float weights in
        `float_file`; they stay int8), and each rewritten op's int8 output
        -> the float tensor it is now QUANTIZEd from.
    """
    constants = _float_constants(float_file)
    dequantize, quantize = opcode(tflite, _OPS.DEQUANTIZE), opcode(tflite, _OPS.QUANTIZE)
    missed, twins = [], {}
    for subgraph in tflite.subgraphs:
        operators, made_float = [], {}
        for op in subgraph.operators:
            name = op_name(subgraph, op)
            code = builtin_code(tflite, op)
            position = data_input(code)
            data = subgraph.tensors[op.inputs[position]] if code in BIASED_OPS else None
            names = _names(subgraph, op, code) if data is not None else []
            if (
                data is None
                or data.type != schema.TensorType.INT8
                or not any(computes_layers(n, model_name, layer_names) for n in names)
            ):
                operators.append(op)
                continue
            found = [n for n in names if n in constants]
            if not found:
                missed.append(name)
                operators.append(op)
                continue
            inputs = list(op.inputs)
            for index, values in constants[found[0]].items():
                like = subgraph.tensors[inputs[index]]
                inputs[index] = float_tensor(
                    tflite, subgraph, like, f"{name}/float_{index}", values
                )
            float_in = float_tensor(tflite, subgraph, data, f"{name}/float_input")
            output = op.outputs[0]
            float_out = float_tensor(tflite, subgraph, subgraph.tensors[output], f"{name}/float")
            inputs[position] = float_in
            before, after = schema.OperatorT(), schema.OperatorT()
            before.opcodeIndex, before.inputs = dequantize, [op.inputs[position]]
            before.outputs = [float_in]
            after.opcodeIndex, after.inputs, after.outputs = quantize, [float_out], [output]
            op.inputs, op.outputs = inputs, [float_out]
            operators.extend([before, op, after])
            made_float[output] = float_out
        # A model output is then read in float: no rounding on the way out.
        subgraph.operators = drop_round_trips(tflite, subgraph, operators, made_float)
        twins.update(made_float)
    return missed, twins
