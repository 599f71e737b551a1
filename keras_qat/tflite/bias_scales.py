"""Repair of int32 bias scales the TFLite converter leaves stale.

TFLite requires a conv/dense bias quantized with scale
`input_scale * weight_scale` (the runtime adds it to the int32 accumulator
as is). When an input's fake-quant range differs from the range observed on
the representative data (an INT4 carrier, whose int8 grid spans far past the
values it holds), the converter quantizes the bias with the observed scale:
the bias comes out up to 17x too large. `repair_bias_scales` re-expresses every
such bias on the scale the runtime uses.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

# Ops whose third input is an int32 bias on input_scale * weight_scale.
_BIASED_OPS = {
    schema.BuiltinOperator.CONV_2D,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
    schema.BuiltinOperator.FULLY_CONNECTED,
    schema.BuiltinOperator.TRANSPOSE_CONV,
}

# Bias scales this close to the expected one are float rounding, not staleness.
_RELATIVE_TOLERANCE = 1e-4


def builtin_code(model, op):
    """The `BuiltinOperator` of `op` in a flatbuffer model object.

    Old files keep codes below 127 in `deprecatedBuiltinCode` only.
    """
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _bias_and_expected_scale(subgraph, op, code):
    """`(bias tensor, expected scales)` of a biased int8 op, or None."""
    bias_index = 3 if code == schema.BuiltinOperator.TRANSPOSE_CONV else 2
    data_index, weight_index = (2, 1) if bias_index == 3 else (0, 1)
    if len(op.inputs) <= bias_index or op.inputs[bias_index] < 0:
        return None
    data, weights, bias = (
        subgraph.tensors[op.inputs[i]] for i in (data_index, weight_index, bias_index)
    )
    if bias.type != schema.TensorType.INT32 or data.quantization is None:
        return None
    expected = np.float64(data.quantization.scale[0]) * np.asarray(
        weights.quantization.scale, np.float64
    )
    return bias, expected


def repair_bias_scales(model):
    """Rescales, in place, int32 biases whose scale is not `input_scale * weight_scale`.

    Args:
        model: A converted int8 `.tflite` model as a flatbuffer object
            (`flatbuffer_utils.convert_bytearray_to_object`).
    """
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = builtin_code(model, op)
            found = code in _BIASED_OPS and _bias_and_expected_scale(subgraph, op, code)
            if not found:
                continue
            bias, expected = found
            actual = np.asarray(bias.quantization.scale, np.float64)
            if np.all(np.abs(actual / expected - 1) <= _RELATIVE_TOLERANCE):
                continue
            buffer = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(buffer.data), np.int32) * (actual / expected)
            limit = np.iinfo(np.int32)
            values = np.clip(np.round(values), limit.min, limit.max).astype(np.int32)
            buffer.data = values.view(np.uint8)
            bias.quantization.scale = expected.astype(np.float32).tolist()
