"""Explicit int8 ranges for tensors the converter would otherwise leave float.

A tensor that feeds a keras_qat input quantizer AND another layer (in
MobileNetV2: a projection convolution or a residual Add whose output goes to
the next block's expand convolution and to its Add) gets no int8 type from the
converter: its producer stays float behind a DEQUANTIZE. In the export copy
such a producer ends in an 8-bit fake-quant over the range the tensor takes on
the representative data, which is the range the converter's own calibration
would give it, so the numbers do not change. The same goes for a tensor fanned
out to several input quantizers (`fanned_out_ranges`), and a quantizer reading a
tensor that has its range already becomes an identity (`merged_quantizers`).
"""

import json

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


def _edges(model):
    """`(producer, consumer)` layer pairs of `model`'s own nodes."""
    # Only this model's nodes: layers the walker shares with the float model
    # also have nodes there.
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for producer in tf.nest.flatten(node.inbound_layers):
                yield producer, node.layer


def _twins(model):
    """Layer name -> the names of all layers computing the same tensor as it.

    Weightless layers of one class and config on the same input (NASNet
    applies five identical ReLUs to its stem) are one tensor to the
    converter, which merges them: what ranges one ranges all.
    """
    inputs = {}
    for producer, consumer in _edges(model):
        inputs.setdefault(consumer.name, (consumer, []))[1].append(producer.name)
    groups = {}
    for layer, producers in inputs.values():
        if not layer.weights and len(producers) == 1:
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
            key = (producers[0], type(layer), json.dumps(config, sort_keys=True, default=str))
            groups.setdefault(key, []).append(layer.name)
    return {name: names for names in groups.values() for name in names}


def _consumers(model):
    """Layer name -> the layers its output feeds, pooled over its twins."""
    twins = _twins(model)
    consumers = {}
    for producer, consumer in _edges(model):
        for name in twins.get(producer.name, [producer.name]):
            consumers.setdefault(name, []).append(consumer)
    return consumers


def shared_quantized_inputs(model):
    """Layers whose output feeds an `InputQuantizeLayer` and a layer that is not one.

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        Names of the producer layers, in model order.
    """
    return [
        name
        for name, users in _consumers(model).items()
        if any(isinstance(user, InputQuantizeLayer) for user in users)
        and not all(isinstance(user, InputQuantizeLayer) for user in users)
    ]


def _bounds(quantize_layer):
    return tuple(float(b) for b in quantize_layer.quantizer.bounds(quantize_layer.quantizer_vars))


def fanned_out_ranges(model):
    """One range for each tensor that feeds several input quantizers, and nothing else.

    With several fake-quants on one tensor the converter keeps one of their
    ranges, or leaves the producer float when they differ. Such a tensor is
    quantized once, over the union of its quantizers' ranges (their common
    range right after calibration; QAT moves them apart only a little).

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        Producer name -> `(clip_min, clip_max)`.
    """
    unions = {}
    for name, users in _consumers(model).items():
        if len(users) > 1 and all(isinstance(user, InputQuantizeLayer) for user in users):
            lows, highs = zip(*(_bounds(user) for user in users), strict=True)
            unions[name] = (min(lows), max(highs))
    return unions


# Layers whose TFLite op keeps its input's scale (PAD, STRIDED_SLICE, RESHAPE,
# MAX_POOL_2D): a range given before them is the range after them.
_SCALE_KEEPING = (
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.MaxPooling2D,
)


def merged_quantizers(model, ranged):
    """The INT8 input quantizers that read a tensor which already has a range.

    That is a tensor given its own range in the export copy, possibly behind
    padding, cropping and other layers that keep the scale, or the output of
    an average pooling whose input is such a tensor (TFLite's int8
    AVERAGE_POOL_2D outputs its input's scale). The converter keeps one range
    per tensor and drops or misplaces a second fake-quant; behind a pooling
    it refused the model (Inception/NASNet cells). In the export copy such
    quantizers become identities, so the layer reads the tensor's one range.
    (INT4 ones stay: their carrier also caps the tensor.)

    Args:
        model: A QAT model (Functional, nested models inlined).
        ranged: Names of the producers whose output gets a range.

    Returns:
        Names of `InputQuantizeLayer`s.
    """
    inputs = {}
    for producer, consumer in _edges(model):
        inputs.setdefault(consumer.name, []).append(producer)
    sources = {name: producers[0] for name, producers in inputs.items() if len(producers) == 1}

    def merged(layer):
        if not isinstance(layer, InputQuantizeLayer) or layer.quantizer.dst_type != "INT8":
            return False
        source = sources.get(layer.name)
        while source is not None and source.name not in ranged:
            if isinstance(source, keras.layers.AveragePooling2D):
                return merged(sources.get(source.name))
            if not isinstance(source, _SCALE_KEEPING):
                return False
            source = sources.get(source.name)
        return source is not None

    return [layer.name for layer in model.layers if merged(layer)]


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
