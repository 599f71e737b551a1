"""Explicit int8 ranges for tensors the converter would otherwise leave float.

A tensor that feeds a keras_qat input quantizer AND another layer (in
MobileNetV2: a projection convolution or a residual Add whose output goes to
the next block's expand convolution and to its Add) gets no int8 type from the
converter: its producer stays float behind a DEQUANTIZE. In the export copy
such a producer ends in an 8-bit fake-quant over the range the tensor takes on
the representative data, which is the range the converter's own calibration
would give it, so the numbers do not change.
"""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.calibration.collect import tensor_ranges
from keras_qat.quantizers import InputQuantizeLayer


class RangedOutput(keras.layers.Layer):
    """Runs `layer`, then fake-quantizes its output to 8 bits over [clip_min, clip_max].

    Args:
        layer: The producer (shared, not copied).
        clip_min: Lower bound (<= 0).
        clip_max: Upper bound (> clip_min).
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, layer, clip_min, clip_max, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def call(self, inputs, *args, **kwargs):
        outputs = self.layer(inputs, *args, **kwargs)
        return tf.quantization.fake_quant_with_min_max_args(
            outputs, self.clip_min, self.clip_max, num_bits=8
        )

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "layer": keras.layers.deserialize(config["layer"])})

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.layers.serialize(self.layer),
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
        }


def shared_quantized_inputs(model):
    """Layers whose output feeds an `InputQuantizeLayer` and a layer that is not one.

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        Names of the producer layers, in model order.
    """
    consumers = {}
    # Only this model's nodes: layers the walker shares with the float model
    # also have nodes there.
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for producer in tf.nest.flatten(node.inbound_layers):
                consumers.setdefault(producer.name, []).append(node.layer)
    return [
        name
        for name, users in consumers.items()
        if any(isinstance(user, InputQuantizeLayer) for user in users)
        and not all(isinstance(user, InputQuantizeLayer) for user in users)
    ]


def observed_ranges(model, names, batches):
    """Min and max (widened to include 0) of each named layer's output over `batches`.

    Args:
        model: The QAT model.
        names: Layer names (single-output layers).
        batches: Input batches, as the model takes them.

    Returns:
        Name -> `(clip_min, clip_max)`.
    """
    if not names:
        return {}
    low = {name: 0.0 for name in names}
    high = {name: 0.0 for name in names}
    tensors = [model.get_layer(name).output for name in names]
    for outputs in tensor_ranges(model, tensors, batches):
        for name, (output_min, output_max) in zip(names, outputs, strict=True):
            low[name] = min(low[name], float(output_min))
            high[name] = max(high[name], float(output_max))
    return {name: (low[name], high[name]) for name in names if high[name] > low[name]}
