"""The Keras layer that rounds the output of an operation with no quantizer of its own."""

from keras_qat.quantizers.quantizer_layer import QuantizerLayer
from keras_qat.quantizers.tracked import TrackedRangeQuantizer


class OutputQuantizeLayer(QuantizerLayer):
    """Rounds its input to 8 bits over a tracked range (`TrackedRangeQuantizer`).

    It follows an operation the .tflite computes in int8 on an output range
    of its own (an Add of two int8 tensors), where no input quantizer reads
    the result: the QAT model rounds there as the file does.

    Args:
        floor: Lowest range minimum (0 when a ReLU the converter fuses into
            the operation follows), or `None`. Defaults to `None`.
        ceiling: Highest range maximum, or `None`. Defaults to `None`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, floor=None, ceiling=None, **kwargs):
        super().__init__(TrackedRangeQuantizer(floor, ceiling), **kwargs)

    def get_config(self):
        return {**super().get_config(), **self.quantizer.get_config()}
