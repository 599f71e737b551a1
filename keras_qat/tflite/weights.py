"""Putting the QAT model's own integer weights, scales and biases into the .tflite.

The converter folds each fake-quantized kernel to float and re-quantizes it
with its own scale, `max|w| / 127` per channel. For INT8 ARQ that is the ARQ
scale; for INT4 weights (values k * s, |k| <= 7) and learned ULQ scales it is
not, and the re-rounding moves the values off the trained grid. Its INT4
kernels it stores packed (two to a byte), which XNNPACK declines: LiteRT's
built-in kernels then requantize with two roundings instead of one, and the
int32 bias, on the step `input_scale * weight_scale`, is coarse at 4 bits (up
to 0.7 output steps off the float bias). `pin_weights` writes the exact
integers `k` and scales `s` back, an INT4 kernel as int8 values `16 k` on the
scale `s / 16` (the same real values; XNNPACK runs the op, and the bias step
is 16 times finer), and each bias as the integers the QAT model adds
(`bias_units`), or, where it adds its float bias, requantized onto the step
the file gives it.
"""

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from keras_qat import kernel_layout
from keras_qat.quantizers.bias import bias_units
from keras_qat.quantizers.introspection import quantized_layers, weight_scales
from keras_qat.quantizers.wrapper import INT4_SPREAD, kernel_entries, quantized_variables
from keras_qat.tflite.ops import (
    WEIGHT_INPUT,
    bias_input,
    bias_steps,
    buffer_users,
    builtin_code,
    own_buffer,
    store_bias,
)

_OPS = schema.BuiltinOperator
# Where each op keeps its weights, and how a channels-last Keras kernel maps to them.
_WEIGHT_LAYOUTS = {
    _OPS.CONV_2D: lambda k: k.transpose(3, 0, 1, 2),  # (h, w, in, out) -> (out, h, w, in)
    _OPS.DEPTHWISE_CONV_2D: lambda k: k.reshape((1, *k.shape[:2], -1)),
    _OPS.FULLY_CONNECTED: lambda k: k.T,  # (in, out) -> (out, in)
    _OPS.TRANSPOSE_CONV: lambda k: k.transpose(2, 0, 1, 3),  # (h, w, out, in) -> (out, h, w, in)
}


def integer_kernels(model):
    """The integer kernels, scales and biases of every quantized layer of `model`.

    Args:
        model: A QAT model or its export copy.

    Returns:
        List of `(integers, scales, bias)`: the fake-quantized kernel divided
        by its scales, as in its Keras layout, and spread to int8 when it is
        INT4 (`INT4_SPREAD`); the scales (one or per channel) to match; and
        the bias the op adds after this kernel (the layer's bias for its
        last kernel, else `None`) as `_bias_in_steps` gives it.
    """
    kernels = []
    for wrapper in quantized_layers(model)[1].values():
        scales = weight_scales(wrapper)
        spread = INT4_SPREAD if wrapper.quantize_config.dst_type == "INT4" else 1
        count = len(wrapper.quantize_config.kernels)
        floats = quantized_variables(wrapper)  # the kernels, then the bias if any
        bias = floats[count] if len(floats) > count else None
        for index, ((attr, _), (kernel, quantizer, variables)) in enumerate(
            zip(wrapper.quantize_config.kernels, kernel_entries(wrapper), strict=True)
        ):
            quantized = quantizer(kernel, False, variables)
            channels_last = kernel_layout.to_channels_last(quantized, quantizer.layout).numpy()
            integers = np.round(channels_last / scales[attr]).astype(np.int32) * spread
            last = bias is not None and index == count - 1
            own_bias = _bias_in_steps(wrapper, bias) if last else None
            kernels.append(
                (integers.reshape(quantized.shape).astype(np.int8), scales[attr] / spread, own_bias)
            )
    return kernels


def _bias_in_steps(wrapper, bias):
    """`(values, step)`: the bias the QAT model adds, in units of `step`.

    Where the model rounds its bias (`BiasQuantizer`), the values are those
    integers and `step` their step; where it adds the float bias, `step` is 1.
    """
    step = wrapper.bias_step()
    if step is None:
        return bias.numpy(), 1.0
    step = tf.cast(step, bias.dtype)
    return bias_units(bias, step).numpy(), step.numpy()


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
        `(integers in the op's layout, scales, bias)`, or None.
    """
    dimension = quantization.quantizedDimension
    real = values * _along(quantization.scale, values.ndim, dimension)
    tolerance = 0.5 * float(np.max(quantization.scale)) * 1.001
    for integers, scales, bias in candidates:
        if integers.ndim != values.ndim or scales.size not in (1, len(quantization.scale)):
            continue
        laid_out = layout(integers)
        if laid_out.shape == real.shape and np.all(
            np.abs(laid_out * _along(scales, real.ndim, dimension) - real) <= tolerance
        ):
            return laid_out, scales, bias
    return None


def _stored_integers(tensor, buffer):
    """The integers of an INT8 or INT4 (two to a byte, low nibble first) weight tensor."""
    data = np.frombuffer(bytes(buffer.data), np.int8)
    if tensor.type == schema.TensorType.INT4:
        low = np.left_shift(data, 4) >> 4  # sign-extends the low nibble
        data = np.stack([low, data >> 4], axis=-1).ravel()[: int(np.prod(tensor.shape))]
    return data.reshape(tensor.shape)


def _set_bias(tflite, subgraph, op, code, weight_scales_, bias, users):
    """Writes `bias` (`_bias_in_steps`) into the op's int32 bias on the step the file gives it.

    That step is the model's own where it rounds its bias (the file's input
    and weight scales are its steps): its integers then go in as they are.
    """
    found = bias_input(subgraph, op, code)
    if found is None:
        return
    data, bias_tensor = found
    values, step = bias
    # One step per weight scale (one, or per channel), as the runtime expects.
    steps = bias_steps(data, weight_scales_)
    units = values * np.asarray(step, np.float64) / np.broadcast_to(steps, values.shape)
    store_bias(tflite, bias_tensor, units, steps, users)


def pin_weights(tflite, model):
    """Rewrites, in place, the weights and biases of `model`'s quantized layers in the file.

    Biases of ops no layer of `model` matches are left on their old scale:
    run `repair_bias_scales` afterwards.

    Args:
        tflite: The converted `.tflite` as a flatbuffer object
            (`flatbuffer_utils.convert_bytearray_to_object`).
        model: The model it was converted from.
    """
    candidates = integer_kernels(model)
    users = buffer_users(tflite)
    for subgraph in tflite.subgraphs:
        for op in subgraph.operators:
            code = builtin_code(tflite, op)
            layout = _WEIGHT_LAYOUTS.get(code)
            if layout is None:
                continue
            tensor = subgraph.tensors[op.inputs[WEIGHT_INPUT]]
            buffer = tflite.buffers[tensor.buffer]
            if tensor.type not in (schema.TensorType.INT8, schema.TensorType.INT4):
                continue
            if buffer.data is None:
                continue
            values = _stored_integers(tensor, buffer)
            found = _match(values, tensor.quantization, candidates, layout)
            if found is None:
                continue
            integers, scales, bias = found
            channels = len(tensor.quantization.scale)
            tensor.type = schema.TensorType.INT8
            buffer = own_buffer(tflite, tensor, users)
            buffer.data = np.ascontiguousarray(integers, np.int8).view(np.uint8).ravel()
            tensor.quantization.scale = np.broadcast_to(scales, (channels,)).tolist()
            tensor.quantization.zeroPoint = [0] * channels
            if bias is not None:
                _set_bias(tflite, subgraph, op, code, tensor.quantization.scale, bias, users)
