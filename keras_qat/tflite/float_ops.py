"""Running in float, in the .tflite, weightless ops the converter keeps int8 against its denylist.

The QAT model computes a LayerNormalization in float. Denylisting its ops
keeps most of them float, but not one whose int8 form keeps its input's scale
(the MEAN that reads the int8 residual sum): the converter quantizes it
anyway, and the mean of the int8 tensor is rounded to that tensor's grid,
which the QAT model never does. `run_weightless_in_float` rewrites such ops
after conversion to read DEQUANTIZEd inputs and write float outputs; the
DEQUANTIZE ops that read their int8 outputs go, and a QUANTIZE stays only for
int8 readers. So do the round trips the converter puts after a float op of
such a layer whose int8 form has a fixed output grid (the TANH in a mish).
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from keras_qat.tflite.float_layers import drop_round_trips, float_tensor, opcode
from keras_qat.tflite.ops import builtin_code, computes_layers, op_name

_OPS = schema.BuiltinOperator
_INT8 = schema.TensorType.INT8


def _is_int8_constant(tflite, tensor):
    return tensor.type == _INT8 and tflite.buffers[tensor.buffer].data is not None


def _dequantized_constant(tflite, subgraph, tensor, name):
    """Appends a float32 constant holding the real values of the int8 constant `tensor`."""
    quantization = tensor.quantization
    axis = quantization.quantizedDimension if len(quantization.scale) > 1 else None
    shape = [-1 if i == axis else 1 for i in range(len(tensor.shape))] if axis is not None else []
    values = np.frombuffer(bytes(tflite.buffers[tensor.buffer].data), np.int8).reshape(tensor.shape)
    scale = np.reshape(np.asarray(quantization.scale, np.float32), shape)
    zero = np.reshape(np.asarray(quantization.zeroPoint, np.int64), shape)
    real = (values.astype(np.int64) - zero).astype(np.float32) * scale
    return float_tensor(tflite, subgraph, tensor, f"{name}/float_constant", real)


def run_weightless_in_float(tflite, model_name, layer_names, float_twins=None, weightless=()):
    """Rewrites, in place, the int8 ops of `layer_names` without int8 weights to float.

    Args:
        tflite: The `.tflite` as a flatbuffer object.
        model_name: The converted Keras model's name (op names start with it).
        layer_names: Names of the layers the file computes in float.
        float_twins: Int8 tensor -> the float tensor a layer run in float
            computed it from (`run_in_float`'s), which such an op reads
            instead: the QAT model does not round between the two. Defaults
            to none.
        weightless: Names among `layer_names` of layers without weights
            (and scopes of float activations). The int8 constants their ops
            read are the activation's own (selu's scale, which the converter
            quantizes even on a denylisted MUL); the rewritten op reads them
            dequantized, as float constants. Other ops with int8 constants
            are left int8. Defaults to none.

    Returns:
        The names of the ops rewritten.
    """
    dequantize, quantize = opcode(tflite, _OPS.DEQUANTIZE), opcode(tflite, _OPS.QUANTIZE)
    rewritten = []
    for subgraph in tflite.subgraphs:
        tensors = subgraph.tensors
        # int8 tensor -> a float tensor of its values (before any rounding), made so far
        as_float = dict(float_twins or {})
        operators, made_float = [], {}  # made_float: int8 output -> its float twin
        written_in_float = set()  # float outputs of the layers' ops the converter kept float
        for op in subgraph.operators:
            name = op_name(subgraph, op)
            inputs = [tensors[i] if i >= 0 else None for i in op.inputs]
            if builtin_code(tflite, op) == _OPS.DEQUANTIZE:
                as_float.setdefault(op.inputs[0], op.outputs[0])
            if (
                builtin_code(tflite, op) == _OPS.QUANTIZE
                and tensors[op.inputs[0]].type != _INT8
                and (
                    computes_layers(name, model_name, layer_names)
                    or op.inputs[0] in written_in_float
                )
            ):
                # A float output of the layers that the converter rounds all
                # the same (a TANH's, on its fixed int8 grid, inside a mish),
                # or that a quantized layer reads (a softplus returned and
                # read by a Dense, rounded on the Dense's input grid): its
                # float readers (the model output) read the float tensor.
                as_float[op.outputs[0]] = made_float[op.outputs[0]] = op.inputs[0]
            elif computes_layers(name, model_name, layer_names):
                written_in_float.update(i for i in op.outputs if tensors[i].type != _INT8)
            if (
                builtin_code(tflite, op) in (_OPS.DEQUANTIZE, _OPS.QUANTIZE)
                or not computes_layers(name, model_name, layer_names)
                or not any(tensors[i].type == _INT8 for i in op.outputs)
                or (
                    any(_is_int8_constant(tflite, t) for t in inputs if t is not None)
                    and not computes_layers(name, model_name, weightless)
                )
            ):
                operators.append(op)
                continue
            new_inputs = []
            for index, tensor in zip(op.inputs, inputs, strict=True):
                if tensor is None or tensor.type != _INT8:
                    new_inputs.append(index)
                    continue
                if _is_int8_constant(tflite, tensor):
                    new_inputs.append(_dequantized_constant(tflite, subgraph, tensor, name))
                    continue
                if index not in as_float:
                    as_float[index] = float_tensor(tflite, subgraph, tensor, f"{name}/float_in")
                    before = schema.OperatorT()
                    before.opcodeIndex, before.inputs = dequantize, [index]
                    before.outputs = [as_float[index]]
                    operators.append(before)
                new_inputs.append(as_float[index])
            new_outputs, after = [], []
            for index in op.outputs:
                if tensors[index].type != _INT8:
                    new_outputs.append(index)
                    continue
                twin = float_tensor(tflite, subgraph, tensors[index], f"{name}/float")
                made_float[index] = twin
                new_outputs.append(twin)
                requantize = schema.OperatorT()
                requantize.opcodeIndex, requantize.inputs = quantize, [twin]
                requantize.outputs = [index]
                after.append(requantize)
            op.inputs, op.outputs = new_inputs, new_outputs
            operators.extend([op, *after])
            rewritten.append(name)
        subgraph.operators = drop_round_trips(tflite, subgraph, operators, made_float)
    return rewritten
