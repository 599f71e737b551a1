"""Feeding calibration batches through the float model and gathering layer inputs."""

import concurrent.futures

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.calibration.ifmr import MAX_SAMPLES, ifmr_clip_range
from keras_qat.data import iterate_batches
from keras_qat.errors import DataError


def _probe(model, tensors, summarize, extra_specs=()):
    """Traces, once, a function from `model`'s inputs to summaries of `tensors`.

    Only the summaries leave the graph: copying every probed activation out
    would cost more than the forward pass itself.

    Args:
        model: A Functional model.
        tensors: Tensors of its graph.
        summarize: TF function of (the tensors' values, *extra inputs) returning
            a list of tensors.
        extra_specs: `tf.TensorSpec` structures of the extra inputs.

    Returns:
        A function of (batch, *extra) returning a list of NumPy arrays.
    """
    probe = keras.Model(model.inputs, list(tensors))
    specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]

    @tf.function(input_signature=[specs, *extra_specs])
    def traced(inputs, *extra):
        return summarize(tf.nest.flatten(probe(inputs, training=False)), *extra)

    def run(batch, *extra):
        inputs = [np.asarray(a, s.dtype.as_numpy_dtype) for a, s in zip(batch, specs, strict=True)]
        return [output.numpy() for output in traced(inputs, *extra)]

    return run


def tensor_ranges(model, tensors, batches):
    """Yields, per batch, `[min, max]` of each of `tensors` (symbolic tensors of `model`).

    Args:
        model: A Functional model.
        tensors: Tensors of its graph.
        batches: Input batches (lists of arrays, one per model input).

    Yields:
        Lists of two-element NumPy arrays, one per tensor.
    """
    run = _probe(
        model,
        tensors,
        lambda values: [tf.stack([tf.reduce_min(v), tf.reduce_max(v)]) for v in values],
    )
    for batch in batches:
        yield run(batch)


def _draw(rng, count, size):
    """Indices of a uniform sample of `size` of `count` values (all when there are no more)."""
    return rng.integers(0, count, size) if count > size else np.arange(count)


def tensor_samples(model, tensors, batches, size, seed=0):
    """Yields, per batch, a uniform random sample of each of `tensors`' values.

    The indices are drawn in NumPy and gathered inside the graph, which adds
    two ops per tensor to the traced function (random ops in the graph made
    tracing cost more than the batches). A tensor whose size is not known
    from its shape and the batch leaves the graph whole and is sampled after.

    Args:
        model: A Functional model.
        tensors: Tensors of its graph (axis 0 is the batch).
        batches: Input batches (lists of arrays, one per model input).
        size: Values kept per tensor and batch, drawn with replacement; a
            tensor with no more values than that is kept whole.
        seed: Sampling seed, for repeatable calibration. Defaults to `0`.

    Yields:
        Lists of flat NumPy arrays, one per tensor.
    """
    per_row = [t.shape[1:].num_elements() for t in tensors]  # None when unknown
    rng = np.random.default_rng(seed)

    def gather(values, indices):
        return [
            v if n is None else tf.gather(tf.reshape(v, [-1]), i)
            for v, i, n in zip(values, indices, per_row, strict=True)
        ]

    index_specs = [tf.TensorSpec([None], tf.int64)] * len(tensors)
    run = _probe(model, tensors, gather, [index_specs])
    for batch in batches:
        rows = len(batch[0])
        indices = [
            np.zeros(0, np.int64) if n is None else _draw(rng, rows * n, size) for n in per_row
        ]
        outputs = run(batch, indices)
        yield [
            o if n is not None else o.ravel()[_draw(rng, o.size, size)]
            for o, n in zip(outputs, per_row, strict=True)
        ]


def calibrate(float_model, layer_inputs, settings, data, batch_num, range_tensors=None):
    """Runs IFMR for each layer on its inputs over `batch_num` batches.

    Args:
        float_model: The float copy of the model (BN folded) holding the tensors.
        layer_inputs: Layer name -> its input tensors in `float_model`.
        settings: Layer name -> `(num_bits, fixed_min)`.
        data: Calibration data (see `iterate_batches`).
        batch_num: Number of batches.
        range_tensors: Name -> a tensor of `float_model` whose minimum and
            maximum over the same batches are wanted too. Defaults to `None`.

    Returns:
        `(clips, ranges)`: layer name -> `(clip_max, clip_min)`, and name ->
        `(minimum, maximum)` for each of `range_tensors`.
    """
    range_tensors = range_tensors or {}
    # The batches are kept: `data` may be a generator, and both passes read them.
    batches = list(iterate_batches(data, batch_num, float_model))
    clips = _ifmr_clips(float_model, layer_inputs, settings, batches)
    return clips, _min_max(float_model, range_tensors, batches)


def _min_max(float_model, tensors, batches):
    """`(minimum, maximum)` of each named tensor over `batches`."""
    ranges = {}
    values = tensor_ranges(float_model, list(tensors.values()), batches) if tensors else []
    for outputs in values:
        for name, (low, high) in zip(tensors, outputs, strict=True):
            old_low, old_high = ranges.get(name, (low, high))
            ranges[name] = (float(min(low, old_low)), float(max(high, old_high)))
    for name, bounds in ranges.items():
        if not np.isfinite(bounds).all():
            raise DataError(
                f"calibration_data: the output of layer '{name}' holds NaN or Inf values in "
                "the float model; scale the data as the model expects it."
            )
    return ranges


def _ifmr_clips(float_model, layer_inputs, settings, batches):
    """IFMR's `(clip_max, clip_min)` per layer, from its inputs over `batches`."""
    names = list(layer_inputs)
    if not names:
        return {}
    flat = [(name, t) for name in names for t in layer_inputs[name]]
    samples = {name: [] for name in names}
    progress = keras.utils.Progbar(len(batches), unit_name="calibration batch")
    # The sample is bounded whatever batch_num is: memory does not grow with
    # batch_num x activation size.
    size = -(-MAX_SAMPLES // len(batches))
    values = tensor_samples(float_model, [t for _, t in flat], batches, size)
    for index, outputs in enumerate(values, 1):
        for (name, _), output in zip(flat, outputs, strict=True):
            samples[name].append(output)
        progress.update(index)
    for name in names:
        # Finite inputs can still overflow float32 inside the model.
        if not all(np.isfinite(part).all() for part in samples[name]):
            raise DataError(
                f"calibration_data: the input of layer '{name}' holds NaN or Inf values in the "
                "float model (the data overflows float32 on its way there); scale the data "
                "as the model expects it."
            )
    # NumPy releases the GIL inside the search's sort: layers run in parallel.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        ranges = pool.map(
            lambda name: ifmr_clip_range(np.concatenate(samples[name]), *settings[name]), names
        )
        return dict(zip(names, ranges, strict=True))
