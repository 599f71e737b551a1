"""Activations as an int8 .tflite computes them: on the fixed output grid of their op."""

import tensorflow as tf

from keras_qat._keras import keras
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
# Those whose output grid is the op's own whatever the data (not swish's MUL).
FIXED_GRID_ACTIVATIONS = ("sigmoid", "tanh", "softmax")


class FileActivation(keras.layers.Layer):
    """An `Activation` whose output is rounded to the grid TFLite's int8 op writes it on.

    It stands for an `Activation` layer (or an activation split out of a
    quantized layer) inside the int8 part of the model. The rounding is a
    fake-quant op (straight-through gradient), and the converter reads its
    fixed range, which is the op's own.

    Args:
        activation: A name in `FILE_ACTIVATIONS`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        if activation not in FILE_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(FILE_ACTIVATIONS)}. "
                f"Received: activation={activation!r}"
            )
        self.activation = activation

    @property
    def writes_fixed_grid(self):
        """Whether the output's grid is the op's own whatever the data (not swish's MUL)."""
        return self.activation in FIXED_GRID_ACTIVATIONS

    def call(self, inputs):
        return FILE_ACTIVATIONS[self.activation](inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class ActivatedOutputQuantizer(TrackedRangeQuantizer):
    """Rounds a layer's output on a tracked range, then applies its activation as the file does.

    The output quantizer of a quantized layer that is a model output with a
    sigmoid, tanh or softmax activation: the file writes the layer's linear
    output as an int8 tensor, then runs the activation as an op of its own
    on its fixed grid. The layer itself runs linear in its wrapper, so the
    QAT model keeps the layer's name on the model output.

    Args:
        activation: A name in `FIXED_GRID_ACTIVATIONS`.
        floor: See `TrackedRangeQuantizer`. Defaults to `None`.
        ceiling: See `TrackedRangeQuantizer`. Defaults to `None`.
    """

    def __init__(self, activation, floor=None, ceiling=None):
        if activation not in FIXED_GRID_ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {list(FIXED_GRID_ACTIVATIONS)}. "
                f"Received: activation={activation!r}"
            )
        super().__init__(floor, ceiling)
        self.activation = activation

    def __call__(self, inputs, training, weights, **kwargs):
        rounded = super().__call__(inputs, training, weights, **kwargs)
        return FILE_ACTIVATIONS[self.activation](rounded)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}
