"""Reading the ops of a converted .tflite (flatbuffer object): their codes and operands."""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

# Ops whose int32 bias is on the scale input_scale * weight_scale.
BIASED_OPS = {
    schema.BuiltinOperator.CONV_2D,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
    schema.BuiltinOperator.FULLY_CONNECTED,
    schema.BuiltinOperator.TRANSPOSE_CONV,
}
# Where those ops keep their weights.
WEIGHT_INPUT = 1


def code_of(entry):
    """The `BuiltinOperator` of an operator-code entry of a flatbuffer model object.

    Old files keep codes below 127 in `deprecatedBuiltinCode` only.

    Args:
        entry: One of the model's `operatorCodes`.

    Returns:
        The operator code, an int.
    """
    return max(entry.builtinCode, entry.deprecatedBuiltinCode)


def builtin_code(model, op):
    """The `BuiltinOperator` of `op` in a flatbuffer model object.

    Args:
        model: The flatbuffer model object.
        op: One of its operators.

    Returns:
        The operator code, an int.
    """
    return code_of(model.operatorCodes[op.opcodeIndex])


def data_input(code):
    """Index of the data (activation) input of a `BIASED_OPS` op.

    Args:
        code: The op's `builtin_code`.

    Returns:
        2 for TRANSPOSE_CONV (after the output shape and the weights), else 0.
    """
    return 2 if code == schema.BuiltinOperator.TRANSPOSE_CONV else 0


def bias_steps(data, weights):
    """The step of a biased op's int32 bias, `input scale * weight scale`, one per weight scale.

    Args:
        data: The op's quantized data input tensor.
        weights: Its weight scales (one, or per output channel).

    Returns:
        A float64 array.
    """
    return np.float64(data.quantization.scale[0]) * np.asarray(weights, np.float64)


def bias_input(subgraph, op, code):
    """`(data input, int32 bias)` tensors of a biased op with a quantized input, or None.

    Args:
        subgraph: The subgraph holding `op`.
        op: An operator.
        code: Its `builtin_code`.

    Returns:
        The two tensors, or None when the op has no int32 bias or its data
        input is not quantized.
    """
    if code not in BIASED_OPS:
        return None
    data_index = data_input(code)
    # TRANSPOSE_CONV: (output shape, weights, data, bias); the others: (data, weights, bias).
    bias_index = 3 if code == schema.BuiltinOperator.TRANSPOSE_CONV else 2
    if len(op.inputs) <= bias_index or op.inputs[bias_index] < 0:
        return None
    data, bias = (subgraph.tensors[op.inputs[i]] for i in (data_index, bias_index))
    if bias.type != schema.TensorType.INT32 or data.quantization is None:
        return None
    return data, bias


def op_name(subgraph, op):
    """The name of the op's first output tensor, which names the op.

    Args:
        subgraph: The subgraph holding `op`.
        op: An operator.

    Returns:
        A string: the converter's location names of what the op computes,
        joined by ";" where it fused several (`model/conv/Conv2D;model/relu/Relu`).
    """
    return subgraph.tensors[op.outputs[0]].name.decode()


def computes_layers(name, model_name, layer_names):
    """Whether the op named `name` computes part of one of `layer_names` of model `model_name`.

    Args:
        name: An `op_name`.
        model_name: The converted Keras model's name.
        layer_names: Layer names.

    Returns:
        True when one of the fused names lies under `model_name/layer/`.
    """
    prefixes = tuple(f"{model_name}/{layer}/" for layer in layer_names)
    return any(part.startswith(prefixes) for part in name.split(";"))


def buffer_users(tflite):
    """Buffer index -> how many tensors (of all subgraphs) read it, for `own_buffer`.

    Args:
        tflite: A `.tflite` model as a flatbuffer object.

    Returns:
        A dict.
    """
    users = {}
    for subgraph in tflite.subgraphs:
        for tensor in subgraph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    return users


def own_buffer(tflite, tensor, users):
    """The buffer `tensor` can be rewritten in: its own, or a new one if others read it too.

    The converter stores equal constants once, and the kernels of two
    BatchNormalizations spelled out as depthwise convolutions are equal at
    INT4 (every channel +7): rewriting the shared buffer for one op
    changed the other's weights under its old type and scales.

    Args:
        tflite: A `.tflite` model as a flatbuffer object.
        tensor: The tensor about to be rewritten.
        users: `buffer_users(tflite)`, kept up to date here.

    Returns:
        A `BufferT` that `tensor` alone reads.
    """
    if users.get(tensor.buffer, 0) > 1:
        users[tensor.buffer] -= 1
        tflite.buffers.append(schema.BufferT())
        tensor.buffer = len(tflite.buffers) - 1
        users[tensor.buffer] = 1
    return tflite.buffers[tensor.buffer]


def store_bias(tflite, tensor, values, steps, users):
    """Stores `values`, counted in `steps`, as the int32 bias `tensor` on scale `steps`.

    Args:
        tflite: A `.tflite` model as a flatbuffer object.
        tensor: The op's int32 bias tensor.
        values: The bias in units of its step (float), one per channel.
        steps: Its step, `bias_steps` (one, or per channel).
        users: `buffer_users(tflite)`: the bias is written into a buffer of
            its own (`own_buffer`).
    """
    limit = np.iinfo(np.int32)
    integers = np.clip(np.round(values), limit.min, limit.max).astype(np.int32)
    own_buffer(tflite, tensor, users).data = integers.view(np.uint8)
    tensor.quantization.scale = np.asarray(steps, np.float32).tolist()
    tensor.quantization.zeroPoint = [0] * len(tensor.quantization.scale)
