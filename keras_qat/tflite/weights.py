"""Putting the QAT model's own integer weights and scales into the .tflite.

The converter folds each fake-quantized kernel to float and re-quantizes it
with its own scale, `max|w| / 127` per channel. For INT8 ARQ that is the ARQ
scale; for INT4 weights (values k * s, |k| <= 7) and learned ULQ scales it is
not, and the re-rounding moves the values off the trained grid.
`pin_weights` writes the exact integers `k` and scales `s` back.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from keras_qat.quantizers import ranges
from keras_qat.quantizers.introspection import quantized_layers, weight_scales
from keras_qat.tflite.bias_scales import builtin_code

_OPS = schema.BuiltinOperator
# Where each op keeps its weights, and how a channels-last Keras kernel maps to them.
_WEIGHT_LAYOUTS = {
    _OPS.CONV_2D: lambda k: k.transpose(3, 0, 1, 2),  # (h, w, in, out) -> (out, h, w, in)
    _OPS.DEPTHWISE_CONV_2D: lambda k: k.reshape((1, *k.shape[:2], -1)),
    _OPS.FULLY_CONNECTED: lambda k: k.T,  # (in, out) -> (out, in)
    _OPS.TRANSPOSE_CONV: lambda k: k.transpose(2, 0, 1, 3),  # (h, w, out, in) -> (out, h, w, in)
}
_WEIGHT_INPUT = 1


def integer_kernels(model):
    """The integer kernels and scales of every quantized layer of `model`.

    Args:
        model: A QAT model or its export copy.

    Returns:
        List of `(integers, scales)`: the fake-quantized kernel divided by its
        scales, as in its Keras layout, and the scales (one or per channel).
    """
    kernels = []
    for wrapper in quantized_layers(model)[1].values():
        scales = weight_scales(wrapper)
        for (attr, _), (kernel, quantizer, variables) in zip(
            wrapper.quantize_config.kernels, wrapper._weight_vars, strict=True
        ):
            quantized = quantizer(kernel, False, variables)
            channels_last = ranges.to_channels_last(quantized, quantizer.layout).numpy()
            integers = np.round(channels_last / scales[attr]).astype(np.int8)
            kernels.append((integers.reshape(quantized.shape), scales[attr]))
    return kernels


def _along(scales, ndim, dimension):
    """Reshapes one or per-channel `scales` to broadcast along `dimension`."""
    scales = np.asarray(scales, np.float32)
    shape = [1] * ndim
    if scales.size > 1:
        shape[dimension] = -1
    return scales.reshape(shape)


def _match(values, quantization, candidates, layout):
    """The candidate whose real values equal the tensor's up to its re-rounding.

    Returns:
        `(integers in the op's layout, scales)`, or None.
    """
    dimension = quantization.quantizedDimension
    real = values * _along(quantization.scale, values.ndim, dimension)
    tolerance = 0.5 * float(np.max(quantization.scale)) * 1.001
    for integers, scales in candidates:
        if integers.ndim != values.ndim or scales.size not in (1, len(quantization.scale)):
            continue
        laid_out = layout(integers)
        if laid_out.shape == real.shape and np.all(
            np.abs(laid_out * _along(scales, real.ndim, dimension) - real) <= tolerance
        ):
            return laid_out, scales
    return None


def pin_weights(tflite, model):
    """Rewrites, in place, the int8 weights of `model`'s quantized layers to their QAT integers.

    Biases are left on their old scale: run `repair_bias_scales` afterwards.

    Args:
        tflite: The converted `.tflite` as a flatbuffer object
            (`flatbuffer_utils.convert_bytearray_to_object`).
        model: The model it was converted from.
    """
    candidates = integer_kernels(model)
    for subgraph in tflite.subgraphs:
        for op in subgraph.operators:
            layout = _WEIGHT_LAYOUTS.get(builtin_code(tflite, op))
            if layout is None:
                continue
            tensor = subgraph.tensors[op.inputs[_WEIGHT_INPUT]]
            buffer = tflite.buffers[tensor.buffer]
            if tensor.type != schema.TensorType.INT8 or buffer.data is None:
                continue
            values = np.frombuffer(bytes(buffer.data), np.int8).reshape(tensor.shape)
            found = _match(values, tensor.quantization, candidates, layout)
            if found is None:
                continue
            integers, scales = found
            channels = len(tensor.quantization.scale)
            buffer.data = np.ascontiguousarray(integers, np.int8).view(np.uint8).ravel()
            tensor.quantization.scale = np.broadcast_to(scales, (channels,)).tolist()
            tensor.quantization.zeroPoint = [0] * channels
