"""A Keras layer that applies one TFMOT quantizer to its input and owns its variables."""

from keras_qat._keras import keras
from keras_qat.plain_call import PlainCall


class QuantizerLayer(PlainCall, keras.layers.Layer):
    """Applies `quantizer` to its input; its variables are built with the layer.

    TFMOT's own `QuantizeLayer` is not used: its `build` leaves the layer
    unbuilt, so loading a `.keras` file builds it twice and fails.

    Args:
        quantizer: A TFMOT `Quantizer` (`build` / `__call__`).
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, quantizer, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizer
        self.quantizer_vars = {}

    def build(self, input_shape):
        self.quantizer_vars = self.quantizer.build(input_shape, self.name, self)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.quantizer(inputs, training, self.quantizer_vars)

    def compute_output_shape(self, input_shape):
        return input_shape
