"""The output quantizer: 8 bits over a range tracked in training, as TFLite holds the tensor."""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import requantize
from keras_qat.quantizers.base import QuantizerBase

# TFMOT's decay for moving-average ranges (MovingAverageQuantizer).
EMA_DECAY = 0.999
# The range of a quantizer that calibration did not set: about TFMOT's
# [-6, 6], but with a whole zero point (128): on a tie (127.5) the converter
# and the fake-quant op round it apart.
_INITIAL_RANGE = (-8.0, 8.0 * 127 / 128)


class TrackedRangeQuantizer(QuantizerBase):
    """Fake-quantizes a layer's output to 8 bits over a range that follows the data.

    In training the range moves, by an exponential moving average (decay
    `EMA_DECAY`), toward each batch's minimum and maximum, held within
    [`floor`, `ceiling`] and widened to include 0; in inference it is fixed.
    The fake-quant is TensorFlow's `fake_quant_with_min_max_vars` (8 bits,
    the full int8 range), the op the TFLite converter reads the tensor's
    int8 scale and zero point from. Unlike TFMOT's `MovingAverageQuantizer`,
    the range can be bounded: a layer whose output goes through a ReLU that
    the converter fuses into it is tracked over the ReLU's output (`floor`
    0), as the file holds it. Given the step of the int32 accumulator the
    output comes from (`accumulator_step`), inference computes the file's
    requantization of it instead (`requantize.accumulator_requantize`),
    which parts from the fake-quant only on ties; training keeps the
    fake-quant, which costs less.

    Args:
        floor: Lowest range minimum (0 for a following ReLU), or `None`.
            Defaults to `None`.
        ceiling: Highest range maximum (6 for a following ReLU6), or `None`.
            Defaults to `None`.
    """

    def __init__(self, floor=None, ceiling=None):
        self.floor = floor
        self.ceiling = ceiling

    def _bounded(self, low, high):
        """`(low, high)` held within [floor, ceiling] and around 0."""
        if self.floor is not None:
            low = tf.maximum(low, float(self.floor))
        if self.ceiling is not None:
            high = tf.minimum(high, float(self.ceiling))
        return tf.minimum(low, 0.0), tf.maximum(high, 0.0)

    def build(self, tensor_shape, name, layer):
        low, high = (float(v) for v in self._bounded(*_INITIAL_RANGE))
        return {
            "range_min": layer.add_weight(
                f"{name}_range_min", initializer=keras.initializers.Constant(low), trainable=False
            ),
            "range_max": layer.add_weight(
                f"{name}_range_max", initializer=keras.initializers.Constant(high), trainable=False
            ),
        }

    def __call__(self, inputs, training, weights, accumulator_step=None, **kwargs):
        low, high = weights["range_min"], weights["range_max"]
        if training:
            # With a floor at or above 0 the held minimum is 0 whatever the
            # batch holds: the pass over the tensor for its minimum is skipped.
            floored = self.floor is not None and self.floor >= 0
            batch_min = tf.zeros((), inputs.dtype) if floored else tf.reduce_min(inputs)
            batch_low, batch_high = self._bounded(batch_min, tf.reduce_max(inputs))
            # TFMOT's update, which averages the batch values over replicas
            # under a distribution strategy.
            average = tf.__internal__.train.assign_moving_average
            low = average(low, batch_low, EMA_DECAY, zero_debias=False)
            high = average(high, batch_high, EMA_DECAY, zero_debias=False)
        if accumulator_step is not None and not training:
            # The file's requantization of the op's sums; inference needs no gradient.
            return requantize.accumulator_requantize(
                tf.round(inputs / accumulator_step), accumulator_step, self.grid(weights), 8
            )
        return tf.quantization.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8)

    @staticmethod
    def grid(weights):
        """The fake-quant op's grid of the current range: `requantize.op_grid`'s triple.

        Args:
            weights: The quantizer's variables (`build`'s result).

        Returns:
            `(scale, zero_point, low)` as float32 scalar tensors.
        """
        return requantize.op_grid(weights["range_min"], weights["range_max"], 8)

    @staticmethod
    def assign_range(weights, low, high):
        """Sets the range (calibration), held around 0.

        Args:
            weights: The quantizer's variables (`build`'s result).
            low: Range minimum.
            high: Range maximum.
        """
        weights["range_min"].assign(min(float(low), 0.0))
        weights["range_max"].assign(max(float(high), 0.0))

    def get_config(self):
        return {"floor": self.floor, "ceiling": self.ceiling}
