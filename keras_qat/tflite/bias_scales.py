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

from keras_qat.tflite.ops import (
    WEIGHT_INPUT,
    bias_input,
    bias_steps,
    buffer_users,
    builtin_code,
    store_bias,
)

# Bias scales this close to the expected one are float rounding, not staleness.
_RELATIVE_TOLERANCE = 1e-4


def repair_bias_scales(model):
    """Rescales, in place, int32 biases whose scale is not `input_scale * weight_scale`.

    Args:
        model: A converted int8 `.tflite` model as a flatbuffer object
            (`flatbuffer_utils.convert_bytearray_to_object`).
    """
    users = buffer_users(model)
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            found = bias_input(subgraph, op, builtin_code(model, op))
            if found is None:
                continue
            data, bias = found
            weights = subgraph.tensors[op.inputs[WEIGHT_INPUT]]
            expected = bias_steps(data, weights.quantization.scale)
            actual = np.asarray(bias.quantization.scale, np.float64)
            if np.all(np.abs(actual / expected - 1) <= _RELATIVE_TOLERANCE):
                continue
            stored = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.int32)
            store_bias(model, bias, stored * (actual / expected), expected, users)
