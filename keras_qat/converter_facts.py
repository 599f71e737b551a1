"""What the TFLite converter makes of Keras layers, where keras_qat's numbers depend on it."""

import numpy as np

from keras_qat._keras import keras
from keras_qat.layer_table import layer_spec

# Layers whose int8 TFLite op keeps its input's scale and each value, on its
# channel (PAD, STRIDED_SLICE, MAX_POOL_2D, REDUCE_MAX, RESIZE_NEAREST_NEIGHBOR
# for UpSampling2D and Resizing),
# or that are no op in inference (dropout and noise layers).
_CHANNEL_KEEPING = (
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.UpSampling2D,
    keras.layers.Resizing,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def keeps_channels(layer):
    """Whether `layer` keeps its input's scale and each value, on its channel.

    A per-channel step still applies after it (the channels on the last axis).

    Args:
        layer: A tf_keras layer.

    Returns:
        True for padding, cropping, max pooling and nearest up-sampling or
        resizing over channels_last tensors, for a `Permute` that keeps the
        last axis last (a TRANSPOSE), and for the dropout and noise layers
        (no op in inference).
    """
    if isinstance(layer, keras.layers.Permute):
        return layer.dims[-1] == len(layer.dims)
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    nearest = getattr(layer, "interpolation", "nearest") == "nearest"
    return isinstance(layer, _CHANNEL_KEEPING) and channels_last and nearest


def keeps_layout(layer):
    """Whether `layer` keeps each value on its grid and each sample's values in their order.

    The channel stays the fastest-varying index of each sample, so a
    per-channel step still applies, tiled, after it.

    Args:
        layer: A tf_keras layer.

    Returns:
        True for the `keeps_channels` layers and for reshapes (RESHAPE).
    """
    return keeps_channels(layer) or isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten))


def keeps_scale(layer):
    """Whether `layer`'s int8 op keeps its input's scale and each value on that grid.

    A range given before it is the range after it, and a tensor on a
    quantizer's grid is on it after it.

    Args:
        layer: A tf_keras layer.

    Returns:
        True for the `keeps_layout` layers and for any `Permute` (TRANSPOSE).
    """
    return keeps_layout(layer) or isinstance(layer, keras.layers.Permute)


def resizes_bilinearly(layer):
    """Whether the file computes `layer` as an int8 `RESIZE_BILINEAR`.

    That op keeps its input's scale, but not each value on its grid: it
    interpolates the int8 values in fixed point and rounds onto that grid.

    Args:
        layer: A tf_keras layer.

    Returns:
        True for a bilinear `UpSampling2D` over a channels_last tensor and
        a bilinear `Resizing` that does not crop, whether or not the input's
        height and width are known before the model runs.
    """
    if isinstance(layer, keras.layers.UpSampling2D):
        return layer.interpolation == "bilinear" and layer.data_format == "channels_last"
    if isinstance(layer, keras.layers.Resizing):
        return layer.interpolation == "bilinear" and not layer.crop_to_aspect_ratio
    return False


# The layers the converter makes an int8 MAXIMUM or MINIMUM of, which has one
# scale for its operands and its output and fuses no activation.
COMPARISONS = (keras.layers.Maximum, keras.layers.Minimum)

# The global average poolings, which the converter makes an int8 MEAN of: it
# averages the int8 levels and requantizes the sum onto its output scale,
# fusing no activation.
MEANS = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D)

# Weightless layers the converter makes pure ops of: two equal ops on the same
# tensors are merged into one, so the file holds one output tensor for them.
MERGED_WHEN_REPEATED = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Permute,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.UpSampling2D,
)

# Layers the .tflite computes in float, with DEQUANTIZE and QUANTIZE at their
# borders, and the QAT model in float too. TFLite has no int8 kernel for a
# LayerNormalization: int8, its decomposition would round the mean, the
# variance and its inverse square root on grids the QAT model does not have.
FLOAT_IN_FILE = (
    keras.layers.LayerNormalization,
    # Int8, a Rescaling is a MUL and an ADD on ranges the QAT model does not have.
    keras.layers.Rescaling,
)

# tf_keras activations the converter writes as several int8 ops, from an
# int8 conversion of each: selu as GREATER, MUL, EXP, SUB, MUL, SELECT_V2;
# softplus as EXP, ADD, LOG; softsign as ABS, ADD, DIV; mish as softplus,
# TANH, MUL; hard_sigmoid (`clip(0.2 x + 0.5, 0, 1)`) as MUL, ADD, MINIMUM, RELU.
DECOMPOSED_ACTIVATIONS = ("selu", "softplus", "softsign", "mish", "hard_sigmoid")


def computed_in_float(layer):
    """Whether the .tflite computes `layer` in float, with DEQUANTIZE and QUANTIZE at its borders.

    The QAT model computes it in float too. Those are the `FLOAT_IN_FILE`
    layers and ELU (an `ELU` layer or activation), which the converter keeps
    float: behind it, a RESHAPE before a quantized layer (a Flatten) failed
    to convert (the reshape's same-scale constraint against the range it
    gave the ELU's QUANTIZE). So are a `Dot` that normalizes its inputs
    (L2_NORMALIZATION, then BATCH_MATMUL) and the activations the converter
    writes as chains of int8 ops, each on a range of its own from the
    representative data (`DECOMPOSED_ACTIVATIONS`; a `ReLU` layer with a
    threshold or a ceiling other than 6: GREATER, CAST, MUL, MINIMUM), which
    the QAT model would have to round on as many ranges, and whose int8
    LOG or DIV may not run (a DIV by a value that rounds to 0 fails).

    Args:
        layer: A tf_keras layer.

    Returns:
        A bool.
    """
    if isinstance(layer, (*FLOAT_IN_FILE, keras.layers.ELU)):
        return True
    if isinstance(layer, keras.layers.Dot):
        return layer.normalize
    if isinstance(layer, keras.layers.ReLU):
        return not fused_activation(layer) and leaky_slope(layer) is None
    if not isinstance(layer, keras.layers.Activation):
        return False
    return layer.get_config()["activation"] in ("elu", *DECOMPOSED_ACTIVATIONS)


# Convolutions keras_qat does not quantize (no `layer_table` entry), which the
# converter still makes int8 ops of, with weights it quantizes itself.
_UNQUANTIZED_CONVOLUTIONS = (
    keras.layers.SeparableConv1D,
    keras.layers.DepthwiseConv1D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv3D,
    keras.layers.Conv3DTranspose,
)


def unquantized_with_weights(layer):
    """Whether `layer` has weights, is not quantized, and is of a kind the file runs in float.

    That is a quantizable kind left as it is (`retrain_enable: false`; a
    quantized layer is a wrapper, with no `layer_table` entry), or a
    convolution keras_qat does not quantize (a `SeparableConv1D`, say): the
    QAT model computes them in float, and the export makes the file do so.

    Args:
        layer: A tf_keras layer (of a QAT model or its export copy).

    Returns:
        A bool.
    """
    spec = layer_spec(layer)
    return (spec is not None and spec.has_weights) or isinstance(layer, _UNQUANTIZED_CONVOLUTIONS)


# The packages whose layers keras_qat knows; any other layer is the user's own.
_KNOWN_PACKAGES = ("tf_keras.", "keras_qat.", "tensorflow_model_optimization.")


def is_opaque(layer):
    """Whether `layer` is a layer class of the user's own that holds weights.

    keras_qat cannot see inside such a layer's `call`: the QAT model runs it in
    float as it is, whatever it holds, and so must the file.

    Args:
        layer: A tf_keras layer.

    Returns:
        True for a layer with weights whose class is not tf_keras's, TFMOT's
        or keras_qat's.
    """
    return bool(layer.weights) and not type(layer).__module__.startswith(_KNOWN_PACKAGES)


# Activations the converter fuses into the convolution or FULLY_CONNECTED
# before them: the op's int8 output is the activation's output.
_FUSED_ACTIVATIONS = {None, "linear", "relu", "relu6"}
# The same as TensorFlow ops called on Keras tensors (TFOpLambda symbols), with
# their output's bounds: a Keras 3 model's hard sigmoid is `tf.nn.relu6(x + 3) / 6`.
_FUSED_OPS = {"nn.relu": (0.0, None), "nn.relu6": (0.0, 6.0)}


def fused_activation(layer):
    """Whether the converter fuses `layer` as an activation into the op before it.

    Args:
        layer: A tf_keras layer.

    Returns:
        True for a plain ReLU or ReLU6 (a `ReLU` layer without slope or
        threshold, an `Activation` layer of relu, relu6 or linear, or
        `tf.nn.relu` or `tf.nn.relu6` called on a Keras tensor).
    """
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (
            not config.get("negative_slope")
            and not config.get("threshold")
            and config.get("max_value") in (None, 6.0)
        )
    if getattr(layer, "symbol", None) in _FUSED_OPS:
        return True
    return isinstance(layer, keras.layers.Activation) and own_activation_fuses(layer)


def fuses_into_copies(layer):
    """Whether the converter fuses an activation into a copy of `layer`'s op that others read too.

    It does for a FULLY_CONNECTED (a Dense of a 2-D input): it writes the op
    twice, once with the activation fused, on the grid of what reads the
    activation, and once for the other readers. A convolution's output, or
    a Dense's of more dimensions (a FULLY_CONNECTED between RESHAPEs), it
    writes once, and a RELU op reads it.

    Args:
        layer: A tf_keras layer called once, or a wrapper of one.

    Returns:
        A bool.
    """
    inner = getattr(layer, "layer", layer)
    return isinstance(inner, keras.layers.Dense) and layer.input.shape.rank == 2


def leaky_slope(layer):
    """The slope below 0 of a layer the file computes as an int8 `LEAKY_RELU`, or `None`.

    Args:
        layer: A tf_keras layer.

    Returns:
        The slope (a float, not 0) of a `LeakyReLU` layer, or of a `ReLU`
        layer with a negative slope and neither threshold nor ceiling;
        `None` for any other layer.
    """
    if isinstance(layer, keras.layers.LeakyReLU):
        slope = layer.get_config()["alpha"]
    elif isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        if config.get("threshold") or config.get("max_value") is not None:
            return None
        slope = config.get("negative_slope")
    else:
        return None
    return float(slope) if slope else None


def activation_bounds(layer):
    """`(floor, ceiling)` of the output of a fused activation, `None` where unbounded.

    Args:
        layer: A layer with an `activation` argument, or a `ReLU` or
            `Activation` layer that `fused_activation` accepts.

    Returns:
        `(0, None)` for relu, `(0, 6)` for relu6, `(None, None)` for linear.
    """
    if getattr(layer, "symbol", None) in _FUSED_OPS:
        return _FUSED_OPS[layer.symbol]
    config = layer.get_config()
    if isinstance(layer, keras.layers.ReLU):
        return 0.0, config.get("max_value")
    return {"relu": (0.0, None), "relu6": (0.0, 6.0)}.get(config.get("activation"), (None, None))


def own_activation_fuses(layer):
    """Whether the `activation` argument of `layer` is one the converter fuses (or none).

    Args:
        layer: A tf_keras layer.

    Returns:
        True when the layer has no activation argument or it is relu, relu6
        or linear (not for a function of the user's own, whose config is a
        dict).
    """
    activation = layer.get_config().get("activation")
    return isinstance(activation, (str, type(None))) and activation in _FUSED_ACTIVATIONS


# TFOpLambda symbols of element-wise adds, multiplies and divisions (`x + 3.0`, `x / 6.0`).
_SCALAR_OPS = {
    "__operators__.add": "add",
    "math.add": "add",
    "math.multiply": "multiply",
    "math.truediv": "divide",
}


def scalar_operation(layer, args, kwargs):
    """What a call of `layer` computes, when it adds, multiplies or divides one tensor by a number.

    The converter writes an add or a multiply as an int8 `ADD` or `MUL`
    with a constant operand, which it quantizes on its own grid: `[0, c]`
    (or `[c, 0]`) in 255 steps.

    Args:
        layer: A tf_keras layer.
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.

    Returns:
        `(kind, constant, operand)`: "add", "multiply" or "divide" (the
        tensor by the number), the number as a float32 (not 0), and the
        tensor argument; `None` for any other call.
    """
    kind = _SCALAR_OPS.get(getattr(layer, "symbol", None))
    values = [*args, *(value for key, value in kwargs.items() if key != "name")]
    tensors = [value for value in values if hasattr(value, "_keras_history")]
    if kind is None or len(values) != 2 or len(tensors) != 1:
        return None
    (number,) = (value for value in values if value is not tensors[0])
    if np.shape(number) != () or not np.float32(number):
        return None
    if kind == "divide" and values[0] is not tensors[0]:
        return None
    return kind, np.float32(number), tensors[0]


def written_by_scalar_operation(tensor):
    """`scalar_operation` of the call that produced Keras tensor `tensor`, or `None`.

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        As `scalar_operation`.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    node = history.layer.inbound_nodes[history.node_index]
    return scalar_operation(history.layer, node.call_args, node.call_kwargs)
