"""Explicit int8 ranges for tensors the converter would otherwise leave float.

A tensor that feeds a keras_qat input quantizer AND another layer that does
not read the quantizer's output (`graph.shared_inputs` moves the quantizer up
in front of all readers where it can; it cannot for a tensor that is also a
model output, joins a Concatenate, or comes from a layer called at several
places) gets no int8 type from the converter: its producer stays float
behind a DEQUANTIZE. In the export copy such a producer ends in an 8-bit
fake-quant over the range the tensor takes on the representative data, which
is the range the converter's own calibration would give it. The same goes
for a tensor fanned out to several input quantizers (`fanned_out_ranges`)
and a concatenation joining a ranged tensor (`joining_concatenations`); a
quantizer reading a tensor that has its range already becomes an identity
(`merged_quantizers`). `export_ranges` puts them together.
"""

import json

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.calibration.collect import tensor_ranges
from keras_qat.converter_facts import keeps_scale
from keras_qat.quantizers import InputQuantizeLayer, OutputQuantizeLayer
from keras_qat.quantizers.introspection import clip_range
from keras_qat.tflite.fixed_quant import AroundLayer, FixedInputQuantizer, fixed_fake_quant


class RangedOutput(AroundLayer):
    """Runs `layer`, then fake-quantizes its output to 8 bits over [clip_min, clip_max].

    Args:
        layer: The producer (shared, not copied).
        clip_min: Lower bound (<= 0).
        clip_max: Upper bound (> clip_min).
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, layer, clip_min, clip_max, **kwargs):
        super().__init__(layer, **kwargs)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def call(self, inputs, *args, **kwargs):
        return fixed_fake_quant(self.layer(inputs, *args, **kwargs), self.clip_min, self.clip_max)

    def get_config(self):
        return {**super().get_config(), "clip_min": self.clip_min, "clip_max": self.clip_max}


def _twins(model):
    """Layer name -> the names of all layers computing the same tensor as it.

    Weightless layers of one class and config on the same input are one
    tensor to the converter, which merges them: what ranges one ranges all.
    Those of the classes `graph.repeated_layers` knows (NASNet's ReLUs)
    were made one layer at the door; this finds the others (Lambdas).
    """
    groups = {}
    for layer, inputs in functional.call_inputs(model):
        if layer.weights or len(inputs) != 1:
            continue
        # The producer's call, not its name: the calls of a layer called at
        # several places are different tensors.
        (producer, index), config = inputs[0], layer.get_config()
        config = {k: v for k, v in config.items() if k != "name"}
        config = json.dumps(config, sort_keys=True, default=str)
        names = groups.setdefault((producer.name, index, type(layer), config), [])
        if layer.name not in names:
            names.append(layer.name)
    return {name: names for names in groups.values() for name in names}


def _call_consumers(model):
    """`(layer name, call index)` -> the layers that call's output feeds, pooled over twins.

    Each once: a layer that reads the output twice is one consumer.
    """
    twins = _twins(model)
    consumers = {}
    for layer, inputs in functional.call_inputs(model):
        for producer, index in inputs:
            for name in twins.get(producer.name, [producer.name]):
                users = consumers.setdefault((name, index), [])
                if all(user is not layer for user in users):
                    users.append(layer)
    return consumers


def _consumers(model):
    """Layer name -> the layers its output feeds, pooled over its calls and twins, each once.

    Each once: one input quantizer reading the calls of a layer called at
    several places (a siamese tower's) is one consumer.
    """
    consumers = {}
    for (name, _), users in _call_consumers(model).items():
        pooled = consumers.setdefault(name, [])
        pooled.extend(user for user in users if all(user is not seen for seen in pooled))
    return consumers


def _input_quantizer_names(model):
    """Names of the input quantizers: their output is on their grid already.

    An input quantizer that narrower ones read (`graph.shared_inputs`) is
    the tensor's one grid; the converter requantizes it for them.
    """
    return {layer.name for layer in model.layers if isinstance(layer, InputQuantizeLayer)}


def shared_quantized_inputs(model):
    """Layers whose output feeds an `InputQuantizeLayer` and a layer that is not one.

    Such a tensor the converter would leave float, unless it is on a
    quantizer's grid already (an average pooling of its output). Call by
    call: a layer called at several places whose one call an input
    quantizer reads and another call other layers has no such tensor.

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        Names of the producer layers, in model order.
    """
    quantizers = _input_quantizer_names(model)
    sources = functional.sources(model)
    shared = {
        name
        for (name, _), users in _call_consumers(model).items()
        if any(isinstance(user, InputQuantizeLayer) for user in users)
        and not all(isinstance(user, InputQuantizeLayer) for user in users)
    }
    return [
        layer.name
        for layer in model.layers
        if layer.name in shared
        and layer.name not in quantizers
        and not _carries_range(layer, sources, quantizers)
    ]


def _quantizer_union(users):
    """The union of the users' ranges when all of them are input quantizers, else `None`."""
    if not users or not all(isinstance(user, InputQuantizeLayer) for user in users):
        return None
    lows, highs = zip(*(clip_range(user) for user in users), strict=True)
    return min(lows), max(highs)


def fanned_out_ranges(model):
    """One range for each tensor that feeds several input quantizers, and nothing else.

    With several fake-quants on one tensor the converter keeps one of their
    ranges, or leaves the producer float when they differ. Such a tensor is
    quantized once, over the union of its quantizers' ranges (their common
    range right after calibration; QAT moves them apart only a little).
    Call by call: the calls of a layer called at several places that feed
    one quantizer each (a siamese tower's, a Dense applied twice in
    sequence) are no fan-out.

    Args:
        model: A QAT model (Functional, nested models inlined).

    Returns:
        Producer name -> `(clip_min, clip_max)`.
    """
    quantizers = _input_quantizer_names(model)
    unions = {}
    for (name, _), users in _call_consumers(model).items():
        union = _quantizer_union(users)
        if name not in quantizers and len(users) > 1 and union is not None:
            # A layer called at several places has one range for its calls.
            low, high = unions.get(name, union)
            unions[name] = min(low, union[0]), max(high, union[1])
    return unions


def _carries_range(layer, sources, ranged):
    """Whether `layer`'s output tensor has a range from `ranged` in the export copy.

    It has when the layer is ranged, or keeps the scale of a tensor that has
    one: padding, cropping and the other `keeps_scale` layers, an average
    pooling (TFLite's int8 AVERAGE_POOL_2D outputs its input's scale) and an
    input quantizer that becomes an identity (`merged_quantizers`).
    """
    while layer.name not in ranged:
        scale_kept = (
            keeps_scale(layer)
            or isinstance(layer, keras.layers.AveragePooling2D)
            or (isinstance(layer, InputQuantizeLayer) and layer.bits == 8)
        )
        producers = sources.get(layer.name, [])
        if not scale_kept or len(producers) != 1:
            return False
        layer = producers[0]
    return True


def merged_quantizers(model, ranged):
    """The input quantizers that read a tensor which already has a range.

    That is a tensor given its own range in the export copy, possibly behind
    padding, cropping and other layers that keep the scale, or the output of
    an average pooling whose input is such a tensor. The converter keeps one
    range per tensor and drops or misplaces a second fake-quant; behind a
    pooling it refuses the model (Inception/NASNet cells). In the export copy
    such quantizers become identities, so the layer reads the tensor's one
    range. (INT4 ones stay: their carrier also caps the tensor.) Those that
    follow a pooling's grid (`InputQuantizeLayer`'s `follows_pooling`)
    become identities at any width: the QAT model reads that grid already.

    Args:
        model: A QAT model (Functional, nested models inlined).
        ranged: Names of the producers whose output gets a range.

    Returns:
        Names of `InputQuantizeLayer`s.
    """
    sources = functional.sources(model)
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, InputQuantizeLayer)
        and (
            layer.follows_pooling
            or (
                layer.quantizer.dst_type == "INT8"
                and len(sources.get(layer.name, [])) == 1
                and _carries_range(sources[layer.name][0], sources, ranged)
            )
        )
    ]


def joining_concatenations(model, ranged):
    """The Concatenate layers without a range of their own that join a ranged tensor.

    TFLite's CONCATENATION has one scale for its inputs and output, and the
    converter spreads a fixed input range to the output and to the other
    inputs, clipping them (NASNet concatenates its adjusted input, ranged
    as a shared tensor, with sums that reach twice its range). Such a
    concatenation needs its own range; the converter then requantizes the
    ranged input into it. An input quantizer's output is ranged too, unless
    only input quantizers read the concatenation: their range is then its
    range. A concatenation that an `OutputQuantizeLayer` rounds has its
    range and is not returned. Concatenations of those are found too (model
    order is topological).

    Args:
        model: A QAT model (Functional, nested models inlined).
        ranged: Names of the producers whose output gets a range.

    Returns:
        Names of Concatenate layers, in model order.
    """
    sources = functional.sources(model)
    consumers = _consumers(model)
    quantizers = _input_quantizer_names(model)
    joins = []
    carrying = set(ranged)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Concatenate) or layer.name in carrying:
            continue
        readers = consumers.get(layer.name, [])
        if readers and all(isinstance(reader, OutputQuantizeLayer) for reader in readers):
            carrying.add(layer.name)  # its range is that quantizer's
            continue
        joined = carrying | quantizers if _quantizer_union(readers) is None else carrying
        if any(_carries_range(p, sources, joined) for p in sources.get(layer.name, [])):
            joins.append(layer.name)
            carrying.add(layer.name)
    return joins


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


def _one_quantizer_behind(name, consumers):
    """The one `InputQuantizeLayer` that every reader of `name`'s output is or leads to, or `None`.

    Behind layers that keep the scale: a layer called at several places
    reading a tensor at one call and its max pooling at another.
    """
    found, names = set(), [name]
    while names:
        for user in consumers.get(names.pop(), []):
            if isinstance(user, InputQuantizeLayer):
                found.add(user)
            elif keeps_scale(user):
                names.append(user.name)
            else:
                return None
    return found.pop() if len(found) == 1 else None


def export_ranges(model, batches=None):
    """The output range of each producer that gets one in the export copy.

    Tensors fanned out to input quantizers only take the union of their
    ranges; with `batches`, tensors shared by a quantizer and another layer,
    and concatenations joining a ranged tensor, take the range observed on
    them, or their quantizers' union when only input quantizers read them.
    A shared tensor whose other readers keep the scale for the same
    quantizer takes that quantizer's grid (an INT4 one's carrier): the
    QAT model writes it there.

    Args:
        model: A QAT model (Functional, nested models inlined).
        batches: Representative input batches. Defaults to `None`.

    Returns:
        Producer name -> `(clip_min, clip_max)`.
    """
    ranges = fanned_out_ranges(model)
    if batches is None:
        return ranges
    shared = shared_quantized_inputs(model)
    consumers = _consumers(model)
    observed = []
    for name in shared:
        reader = _one_quantizer_behind(name, consumers)
        if reader is None:
            observed.append(name)
        else:
            ranges[name] = FixedInputQuantizer.freeze(reader).carrier_bounds()
    for name in joining_concatenations(model, {*ranges, *shared}):
        union = _quantizer_union(consumers.get(name))
        if union is None:
            observed.append(name)
        else:
            ranges[name] = union
    ranges.update(observed_ranges(model, observed, batches))
    return ranges
