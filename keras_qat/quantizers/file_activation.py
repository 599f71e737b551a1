"""Activations as an int8 .tflite computes them: on the fixed output grid of their op."""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import requantize
from keras_qat.quantizers.file_arithmetic import FileOperation, grid_holder
from keras_qat.quantizers.tracked import TrackedRangeQuantizer

# TFLite's int8 LOGISTIC and SOFTMAX write on the grid 1/256 (zero point -128),
# TANH on 1/128 (zero point 0), whatever the data: the ranges of those grids.
_SIGMOID_GRID = (0.0, 255.0 / 256.0)
_TANH_GRID = (-1.0, 127.0 / 128.0)


def _on_grid(values, grid):
    return tf.quantization.fake_quant_with_min_max_args(values, *grid, num_bits=8)


def _sigmoid(x):
    return _on_grid(tf.math.sigmoid(x), _SIGMOID_GRID)


def _swish(x):
    return x * _sigmoid(x)  # LOGISTIC then MUL in the file


# Activation name -> what the file computes.
FILE_ACTIVATIONS = {
    "sigmoid": _sigmoid,
    "swish": _swish,
    "silu": _swish,
    "tanh": lambda x: _on_grid(tf.math.tanh(x), _TANH_GRID),
    "softmax": lambda x: _on_grid(tf.nn.softmax(x), _SIGMOID_GRID),
}
# Those whose output grid is the op's own whatever the data (not swish's MUL): its range.
FIXED_GRID_ACTIVATIONS = {"sigmoid": _SIGMOID_GRID, "tanh": _TANH_GRID, "softmax": _SIGMOID_GRID}
# Those the file computes with a MUL of the input and its logistic.
MULTIPLYING_ACTIVATIONS = ("swish", "silu")


def fixed_grid(activation):
    """The op's fixed output grid of one of `FIXED_GRID_ACTIVATIONS` (`requantize.op_grid`'s)."""
    return requantize.op_grid(*FIXED_GRID_ACTIVATIONS[activation], 8)


class _LogisticGrid:
    """The grid a `LOGISTIC` writes on, for swish's `MUL`, as a `FileOperation` operand sees it."""

    @staticmethod
    def grid():
        return requantize.op_grid(*_SIGMOID_GRID, 8)


_LOGISTIC_GRID = _LogisticGrid()


class FileActivation(FileOperation, keras.layers.Layer):
    """An `Activation` whose output is rounded to the grid TFLite's int8 op writes it on.

    It stands for an `Activation` layer (or an activation split out of a
    quantized layer) inside the int8 part of the model. The rounding is a
    fake-quant op (straight-through gradient), and the converter reads its
    fixed range, which is the op's own. Swish is `LOGISTIC` then `MUL` of
    the input and the logistic: in inference the `MUL` is the file's
    (`FileOperation`) where the input's grid and the reader's are known.

    Args:
        activation: A name in `FILE_ACTIVATIONS`.
        axis: The axis of a softmax (a `Softmax` layer's; the file computes
            one over another axis than the last between TRANSPOSEs, which
            keep the scale). Defaults to -1.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    _OP = staticmethod(requantize.multiply_requantize)

    def __init__(self, activation, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if activation not in FILE_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(FILE_ACTIVATIONS)}. "
                f"Received: activation={activation!r}"
            )
        self.activation = activation
        self.axis = axis

    @property
    def writes_fixed_grid(self):
        """Whether the output's grid is the op's own whatever the data (not swish's MUL)."""
        return self.activation in FIXED_GRID_ACTIVATIONS

    def grid(self):
        """The op's fixed output grid (`requantize.op_grid`'s triple), if `writes_fixed_grid`."""
        return fixed_grid(self.activation)

    def input_step(self):
        """The step of the fixed grid, the input step of a quantized layer reading it.

        Returns:
            A scalar tensor, or `None` without a fixed grid (swish) and in
            export's copy (`plain_copy`), where the reader's sums are not
            simulated.
        """
        if self._plain or not self.writes_fixed_grid:
            return None
        return self.grid()[0]

    def _operand_grids(self, inputs):
        if self.activation not in MULTIPLYING_ACTIVATIONS:
            return []
        return [grid_holder(inputs), _LOGISTIC_GRID]

    def _operands(self, inputs):
        return [inputs, _sigmoid(inputs)]

    def call(self, inputs, training=None):
        if self.activation == "softmax":
            axis = self.axis[0] if isinstance(self.axis, (list, tuple)) else self.axis
            return _on_grid(tf.nn.softmax(inputs, axis=axis), _SIGMOID_GRID)
        outputs = FILE_ACTIVATIONS[self.activation](inputs)
        if self.activation not in MULTIPLYING_ACTIVATIONS:
            return outputs
        return self._in_inference(inputs, outputs, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "axis": self.axis}


# The name scope of an `ActivatedOutputQuantizer`'s float activation: the export
# keeps the ops under it float (`tflite/float_front.py`).
FLOAT_ACTIVATION_SCOPE = "float_activation"


class ActivatedOutputQuantizer(TrackedRangeQuantizer):
    """Rounds a layer's output on a tracked range, then applies its activation as the file does.

    The output quantizer of a quantized layer that is a model output with an
    activation the converter does not fuse: the file writes the layer's
    linear output as an int8 tensor, then runs the activation. A sigmoid,
    tanh or softmax is an op of its own on its fixed grid; any other (GELU,
    swish, selu, softplus, ...) runs in float in the file, its ops kept
    float by the export (they are under `FLOAT_ACTIVATION_SCOPE`), where the
    converter would round them on ranges of its own. The layer itself runs
    linear in its wrapper, so the QAT model keeps the layer's name on the
    model output.

    Args:
        activation: The name of a tf_keras activation.
        floor: See `TrackedRangeQuantizer`. Defaults to `None`.
        ceiling: See `TrackedRangeQuantizer`. Defaults to `None`.
    """

    def __init__(self, activation, floor=None, ceiling=None):
        super().__init__(floor, ceiling)
        self.activation = activation

    @property
    def runs_in_float(self):
        """Whether the file computes the activation in float (not on a fixed int8 grid)."""
        return self.activation not in FIXED_GRID_ACTIVATIONS

    def __call__(self, inputs, training, weights, **kwargs):
        rounded = super().__call__(inputs, training, weights, **kwargs)
        if not self.runs_in_float:
            return FILE_ACTIVATIONS[self.activation](rounded)
        with tf.name_scope(FLOAT_ACTIVATION_SCOPE):
            return keras.activations.get(self.activation)(rounded)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}
