"""The Keras layer that quantizes a quantized layer's input."""

from keras_qat._keras import keras
from keras_qat.quantizers import ranges
from keras_qat.quantizers.quantizer_layer import QuantizerLayer
from keras_qat.quantizers.ulq import UlqQuantizer


class InputQuantizeLayer(QuantizerLayer):
    """Applies an activation quantizer (`UlqQuantizer`) and owns its variables.

    Args:
        quantizer: The activation quantizer.
        target: Name of the layer whose input this quantizes, or a list of
            names when several layers read the one rounded tensor, for
            reports. Defaults to `None`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, quantizer, target=None, **kwargs):
        super().__init__(quantizer, **kwargs)
        self.target = target

    @property
    def targets(self):
        """The names of the layers whose input this quantizes, a tuple."""
        if self.target is None:
            return ()
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def input_step(self):
        """The step of the quantizer's grid (the quantized layer's input step), a scalar tensor."""
        clip_min, clip_max = self.quantizer.bounds(self.quantizer_vars)
        return (clip_max - clip_min) / (2 ** ranges.bits_of(self.quantizer.dst_type) - 1)

    def get_config(self):
        return {
            **super().get_config(),
            "target": self.target,
            "quantizer": keras.utils.serialize_keras_object(self.quantizer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["quantizer"] = keras.utils.deserialize_keras_object(
            config["quantizer"], custom_objects={"UlqQuantizer": UlqQuantizer}
        )
        return cls(**config)
