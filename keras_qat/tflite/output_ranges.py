"""Explicit int8 ranges for tensors the converter would otherwise leave float.

A tensor that feeds a keras_qat input quantizer AND another layer (in
MobileNetV2: a projection convolution or a residual Add whose output goes to
the next block's expand convolution and to its Add) gets no int8 type from the
converter: its producer stays float behind a DEQUANTIZE. In the export copy
such a producer ends in an 8-bit fake-quant over the range the tensor takes on
the representative data, which is the range the converter's own calibration
would give it, so the numbers do not change. An average pooling of a quantized
input ends in its input's grid (`pooled_input_grids`), as TFLite requires.
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


def _edges(model):
    """`(producer, consumer)` layer pairs of `model`'s own nodes."""
    # Only this model's nodes: layers the walker shares with the float model
    # also have nodes there.
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for producer in tf.nest.flatten(node.inbound_layers):
                yield producer, node.layer


def _consumers(model):
    consumers = {}
    for producer, consumer in _edges(model):
        consumers.setdefault(producer.name, []).append(consumer)
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

    The converter keeps one range per tensor: of several fake-quants on one
    tensor it applies one and drops the others, and with different ranges
    it can leave the producer float or give an average pooling two scales.
    In the export copy such a tensor is quantized once, over the union of
    its quantizers' ranges (their common range right after calibration; QAT
    moves them apart only a little), and the quantizers become identities.

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        `(ranges, quantizers)`: producer name -> `(clip_min, clip_max)`, and
        the names of the input quantizers the range replaces.
    """
    ranges, quantizers = {}, []
    for name, users in _consumers(model).items():
        if len(users) > 1 and all(isinstance(user, InputQuantizeLayer) for user in users):
            lows, highs = zip(*(_bounds(user) for user in users), strict=True)
            ranges[name] = (min(lows), max(highs))
            quantizers.extend(user.name for user in users)
    return ranges, quantizers


def pooled_input_grids(model, ranges):
    """The int8 grid of each average pooling's quantized input, to end the pooling in.

    TFLite's int8 AVERAGE_POOL_2D must have the scale of its input at its
    output; the converter may give the output another range (seen after a
    Concatenate in Inception/NASNet cells) and then refuses the model. The
    int8 op rounds its output onto the input's grid anyway, so ending the
    pooling in a fake-quant over that grid changes no number of the .tflite.

    Args:
        model: A QAT model (Functional, nested models inlined).
        ranges: Producer name -> range already given to its output; the
            converter uses it for the pooling's input rather than the
            pooling's own input quantizer.

    Returns:
        Name -> `(clip_min, clip_max)` of an 8-bit fake-quant over the grid,
        for AveragePooling2D layers whose input comes from an
        `InputQuantizeLayer` and whose output feeds another layer.
    """
    sources = {consumer.name: producer for producer, consumer in _edges(model)}
    used = _consumers(model)
    grids = {}
    for producer, consumer in _edges(model):
        # A pooling that only ends the model keeps the converter's output range.
        if (
            isinstance(consumer, keras.layers.AveragePooling2D)
            and isinstance(producer, InputQuantizeLayer)
            and consumer.name in used
        ):
            source = sources[producer.name].name
            if source in ranges:
                grids[consumer.name] = ranges[source]
            else:
                low, high = producer.quantizer.int8_range(producer.quantizer_vars)
                grids[consumer.name] = (float(low), float(high))
    return grids


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
