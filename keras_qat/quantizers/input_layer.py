"""The Keras layer that quantizes a quantized layer's input."""

import weakref

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import ranges, requantize
from keras_qat.quantizers.quantizer_layer import QuantizerLayer
from keras_qat.quantizers.ulq import UlqQuantizer


def _grid_source(tensor):
    """The `InputQuantizeLayer` whose int8 grid `tensor` is on in the file, and whether pooled.

    `tensor` is on it when that layer produced it, or when an average
    pooling did from that layer's output (an int8 average pooling keeps its
    input's grid).

    Returns:
        `(layer, pooled)`, or `(None, False)`.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, False
    layer, pooled = history.layer, False
    if isinstance(layer, keras.layers.AveragePooling2D):
        (read,) = tf.nest.flatten(layer.inbound_nodes[history.node_index].keras_inputs)
        layer, pooled = read._keras_history.layer, True
    if isinstance(layer, InputQuantizeLayer):
        return layer, pooled
    return None, False


class InputQuantizeLayer(QuantizerLayer):
    """Applies an activation quantizer (`UlqQuantizer`) and owns its variables.

    Reading a tensor that the .tflite holds as int8 on another quantizer's
    grid (found when the layer is called on a Keras tensor: the output of
    another `InputQuantizeLayer`, or of an average pooling of one), the
    forward pass computes the file's int8-to-int8 requantization instead
    (`requantize`): the values the file writes, with the quantizer's own
    gradients.

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
        self._source = None  # a weakref: the source's variables are its own
        self._pooled = False

    def __call__(self, inputs, *args, **kwargs):
        source, pooled = _grid_source(inputs)
        if source is not None:
            self._source, self._pooled = weakref.ref(source), pooled
        return super().__call__(inputs, *args, **kwargs)

    @property
    def grid_source(self):
        """The `InputQuantizeLayer` whose grid the input is on in the file, or `None`."""
        return None if self._source is None else self._source()

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training)
        source = self.grid_source
        if source is None:
            return outputs
        in_scale, zero_point, _ = source.grid()
        if self._pooled:
            levels = requantize.pooled_levels(inputs, in_scale, zero_point)
        else:
            levels = tf.round(inputs / in_scale)
        bits = ranges.bits_of(self.quantizer.dst_type)
        written = requantize.file_requantize(levels, in_scale, self.grid(), bits)
        # The file's values forward, the quantizer's gradients backward.
        return outputs + tf.stop_gradient(written - outputs)

    def grid(self):
        """The fake-quant op's grid of the current bounds: `requantize.op_grid`'s triple."""
        clip_min, clip_max = self.quantizer.bounds(self.quantizer_vars)
        return requantize.op_grid(clip_min, clip_max, ranges.bits_of(self.quantizer.dst_type))

    @property
    def targets(self):
        """The names of the layers whose input this quantizes, a tuple."""
        if self.target is None:
            return ()
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def input_step(self):
        """The step of the quantizer's grid (the quantized layer's input step), a scalar tensor."""
        return self.grid()[0]

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
