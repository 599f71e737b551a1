"""The Keras layer that rounds the output of an operation with no quantizer of its own."""

from keras_qat.quantizers.input_layer import RequantizingLayer
from keras_qat.quantizers.tracked import TrackedRangeQuantizer


class OutputQuantizeLayer(RequantizingLayer):
    """Rounds its input to 8 bits over a tracked range (`TrackedRangeQuantizer`).

    It follows an operation the .tflite computes in int8 on an output range
    of its own (an Add of two int8 tensors, a Concatenate), where no input
    quantizer reads the result: the QAT model rounds there as the file does.
    The slices of a Concatenate that the file holds on an input quantizer's
    grid are requantized as the file does (`RequantizingLayer`).

    Args:
        floor: Lowest range minimum (0 when a ReLU the converter fuses into
            the operation follows), or `None`. Defaults to `None`.
        ceiling: Highest range maximum, or `None`. Defaults to `None`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, floor=None, ceiling=None, **kwargs):
        super().__init__(TrackedRangeQuantizer(floor, ceiling), **kwargs)

    @property
    def bits(self):
        return 8

    def grid(self):
        return TrackedRangeQuantizer.grid(self.quantizer_vars)

    def get_config(self):
        return {**super().get_config(), **self.quantizer.get_config()}
