"""LiteRT's int8 `HARD_SWISH`, which the file computes for a tensor times its hard sigmoid.

The converter fuses `x * relu6(x + 3) / 6` (MobileNetV3's hard swish: a
`Multiply` of a tensor and its hard sigmoid, `hard_sigmoid_input`) into
one `HARD_SWISH` op. XNNPACK declines it at int8, and LiteRT's built-in
kernel computes it in 16-bit fixed point: the level times 2^7, scaled by
two 16-bit multipliers (onto the output step, and onto a step on which 3
is 2^15), the hard sigmoid clamped to [0, 1] in between, and three
roundings of their own. The fake-quant of the float product parts from it
on some levels of most scale pairs.
"""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.converter_facts import written_by_scalar_operation
from keras_qat.quantizers.ranges import divided
from keras_qat.quantizers.requantize import on_grid, quantized_multiplier

_INT16 = (-(2**15), 2**15 - 1)
# The kernel's step for the hard sigmoid's input: 3 is 2^15 on it.
_RELUISH_SCALE = 3.0 / 2.0**15


def _int16_multiplier(ratio):
    """`QuantizeMultiplier` of float32 `ratio`, its 31-bit `q` rounded to 16 bits.

    Returns:
        `(q16, exponent)`: int32 scalar tensors, ratio ~ q16 * 2^(exponent - 15).
    """
    q, shift = quantized_multiplier(tf.cast(ratio, tf.float64))
    # DownScaleInt32ToInt16Multiplier: half up, at most 2^15 - 1.
    q16 = tf.minimum(tf.floor((q + 2.0**15) / 2.0**16), _INT16[1])
    return tf.cast(q16, tf.int32), tf.cast(shift, tf.int32)


def _rounding_high_mul(a, b):
    """gemmlowp's `SaturatingRoundingDoublingHighMul` of int16 values, `b` >= 0.

    `a * b / 2^15` to the nearest, ties away from zero (C's division
    truncates); with `b` >= 0 it never saturates.
    """
    product = a * b
    nudge = tf.where(product >= 0, 2**14, 1 - 2**14)
    return tf.truncatediv(product + nudge, 2**15)


def _high_mul(a, b):
    """The kernel's `SaturatingDoublingHighMul`: `a * b / 2^15` truncated toward zero."""
    return tf.truncatediv(a * b, 2**15)


def _saturating_left_shift(values, amount):
    """`values * 2^amount` saturated to int16 (`amount` >= 0, a scalar)."""
    power = tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.cast(amount, tf.int64))
    return tf.cast(tf.clip_by_value(tf.cast(values, tf.int64) * power, *_INT16), tf.int32)


def _rounding_divide_by_power_of_two(values, exponent):
    """gemmlowp's `RoundingDivideByPOT`: `values / 2^exponent`, ties away from zero."""
    power = tf.bitwise.left_shift(tf.constant(1, tf.int32), exponent)
    threshold = tf.math.floordiv(power - 1, 2) + tf.cast(values < 0, tf.int32)
    rounds_up = tf.math.floormod(values, power) > threshold
    return tf.math.floordiv(values, power) + tf.cast(rounds_up, tf.int32)


def hard_swish_requantize(levels, in_scale, out_grid, num_bits):
    """LiteRT's built-in int8 `HARD_SWISH` of `levels` on step `in_scale`, onto `out_grid`.

    Args:
        levels: Float32 integers: the input's levels above its zero point
            (-255 to 255).
        in_scale: The input grid's step (float32).
        out_grid: `requantize.op_grid(...)` of the output grid, whose step
            is at least `in_scale / 128` (LiteRT refuses a smaller one).
        num_bits: The output grid's bit width.

    Returns:
        The output values, as `requantize.file_requantize` gives them.
    """
    hires_scale = in_scale * (1.0 / 128.0)  # exact: a power of two
    out_q, out_exponent = _int16_multiplier(divided(hires_scale, out_grid[0]))
    relu_q, relu_exponent = _int16_multiplier(divided(hires_scale, _RELUISH_SCALE))
    hires = tf.cast(levels, tf.int32) * 128
    preshift = _rounding_high_mul(hires, out_q)
    # The level on the hard sigmoid's step, saturating at +-3: any left shift
    # but its last bit first, so that saturation there cannot reach the result.
    raised = tf.cast(relu_exponent > 0, tf.int32)
    reluish = _saturating_left_shift(hires, tf.maximum(relu_exponent - 1, 0))
    reluish = _saturating_left_shift(_rounding_high_mul(reluish, relu_q), raised)
    reluish = _rounding_divide_by_power_of_two(reluish, tf.maximum(-relu_exponent, 0))
    reluish = tf.math.floordiv(reluish + 2**15, 2)  # [-1, 1] onto [0, 1] in Q15
    written = _rounding_divide_by_power_of_two(
        _high_mul(reluish, preshift), tf.maximum(-out_exponent, 0)
    )
    return on_grid(tf.cast(written, tf.float32), out_grid, num_bits)


def _op_of_constant(tensor, kind, constant):
    """The tensor operand of `tensor`'s `scalar_operation` of `kind` with `constant`, or `None`."""
    operation = written_by_scalar_operation(tensor)
    if operation is None or operation[:2] != (kind, np.float32(constant)):
        return None
    return operation[2]


def _relu6_input(tensor):
    """The input of the ReLU6 (a `ReLU` layer, or `tf.nn.relu6`) that wrote `tensor`, or `None`."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    layer = history.layer
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        relu6 = config["max_value"] == 6.0 and not config["negative_slope"]
        relu6 = relu6 and not config["threshold"]
    else:
        relu6 = getattr(layer, "symbol", None) == "nn.relu6"
    inputs = tf.nest.flatten(layer.inbound_nodes[history.node_index].keras_inputs)
    return inputs[0] if relu6 and len(inputs) == 1 else None


def _hard_sigmoid_steps(tensor):
    """The Keras tensors `relu6(x + 3) / 6` is computed through, from `tensor` back to `x`.

    Returns:
        `[tensor, relu6 output, sum, x]`, or `None` when TFOpLambda ops and
        a ReLU6 did not write `tensor` so (or `* (1 / 6)`).
    """
    clamped = _op_of_constant(tensor, "multiply", 1.0 / 6.0)
    if clamped is None:
        clamped = _op_of_constant(tensor, "divide", 6.0)
    shifted = None if clamped is None else _relu6_input(clamped)
    x = None if shifted is None else _op_of_constant(shifted, "add", 3.0)
    return None if x is None else [tensor, clamped, shifted, x]


def hard_sigmoid_input(tensor):
    """The Keras tensor `x` of which `tensor` is `relu6(x + 3) / 6` (or `* (1 / 6)`), or `None`.

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        `x`, when TFOpLambda ops and a ReLU6 wrote `tensor` so.
    """
    steps = _hard_sigmoid_steps(tensor)
    return None if steps is None else steps[-1]


def swished_operand(operands):
    """The index of `x` when the two Keras tensors `operands` are `x` and its hard sigmoid.

    Args:
        operands: A list of Keras tensors.

    Returns:
        0 or 1, or `None` when they are not such a pair.
    """
    if len(operands) != 2:
        return None
    for index in (0, 1):
        if hard_sigmoid_input(operands[1 - index]) is operands[index]:
            return index
    return None


def product_operands(layer, args, kwargs):
    """The two tensors a `Multiply` layer or a TFOpLambda `x * y` multiplies in a call.

    Args:
        layer: A tf_keras layer.
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.

    Returns:
        A list of two Keras tensors, or `None` for any other call.
    """
    if isinstance(layer, keras.layers.Multiply):
        operands = tf.nest.flatten(args[0])
    elif getattr(layer, "symbol", None) == "math.multiply":
        values = [*args, *(value for key, value in kwargs.items() if key != "name")]
        operands = [value for value in values if hasattr(value, "_keras_history")]
        operands = operands if len(operands) == len(values) else []
    else:
        return None
    return operands if len(operands) == 2 else None


def hard_swishes(model):
    """The products of `model` that the converter fuses with a hard sigmoid into a `HARD_SWISH`.

    That is a product of `x` and `relu6(x + 3) / 6` (a `Multiply` layer or a
    TFOpLambda `x * ...`): the file computes the product and the add, ReLU6
    and multiply (or divide) of the hard sigmoid as one op, with no tensor
    between them.

    Args:
        model: A Functional model (its own layers; nested models are not searched).

    Returns:
        A dict: the product's layer name -> the names of its hard sigmoid's layers.
    """
    found = {}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            operands = product_operands(layer, node.call_args, node.call_kwargs)
            index = None if operands is None else swished_operand(operands)
            if index is not None:
                steps = _hard_sigmoid_steps(operands[1 - index])
                found[layer.name] = {step._keras_history.layer.name for step in steps[:-1]}
    return found
