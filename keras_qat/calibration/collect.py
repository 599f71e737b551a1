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


def tensor_samples(model, tensors, batches, size, seed=0, range_tensors=()):
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
        range_tensors: More tensors of its graph, of which only the minimum
            and maximum are wanted, in the same pass. Defaults to none.

    Yields:
        Lists of flat NumPy arrays, one per tensor, then one `[min, max]`
        per range tensor.
    """
    count = len(tensors)
    per_row = [t.shape[1:].num_elements() for t in tensors]  # None when unknown
    rng = np.random.default_rng(seed)

    def summarize(values, indices):
        samples = [
            v if n is None else tf.gather(tf.reshape(v, [-1]), i)
            for v, i, n in zip(values[:count], indices, per_row, strict=True)
        ]
        return samples + [tf.stack([tf.reduce_min(v), tf.reduce_max(v)]) for v in values[count:]]

    index_specs = [tf.TensorSpec([None], tf.int64)] * count
    run = _probe(model, [*tensors, *range_tensors], summarize, [index_specs])
    for batch in batches:
        rows = len(batch[0])
        indices = [
            np.zeros(0, np.int64) if n is None else _draw(rng, rows * n, size) for n in per_row
        ]
        outputs = run(batch, indices)
        samples = [
            o if n is not None else o.ravel()[_draw(rng, o.size, size)]
            for o, n in zip(outputs[:count], per_row, strict=True)
        ]
        yield samples + outputs[count:]


def calibrate(float_model, layer_inputs, settings, data, batch_num, range_tensors=None):
    """Runs IFMR for each layer on its inputs over `batch_num` batches.

    Args:
        float_model: The float copy of the model (BN folded) holding the tensors.
        layer_inputs: Layer name -> its input tensors in `float_model`.
        settings: Layer name -> `(num_bits, fixed_min)`.
        data: Calibration data (see `iterate_batches`).
        batch_num: Number of batches.
        range_tensors: Name -> tensors of `float_model` (a list: one per
            call of a layer called several times) whose minimum and maximum
            over the same batches, all of them together, are wanted too (one
            pass reads both). Defaults to `None`.

    Returns:
        `(clips, ranges)`: layer name -> `(clip_max, clip_min)`, and name ->
        `(minimum, maximum)` for each of `range_tensors`.

    Raises:
        DataError: if a tensor calibration reads holds NaN or Inf values.
    """
    range_tensors = range_tensors or {}
    range_names = [name for name, tensors in range_tensors.items() for _ in tensors]
    names = list(layer_inputs)
    flat = [(name, t) for name in names for t in layer_inputs[name]]
    samples = {name: [] for name in names}
    ranges = {}
    progress = keras.utils.Progbar(batch_num, unit_name="calibration batch")
    batches = iterate_batches(data, batch_num, float_model)
    # The sample is bounded whatever batch_num is: memory does not grow with
    # batch_num x activation size.
    size = -(-MAX_SAMPLES // batch_num)
    values = tensor_samples(
        float_model,
        [t for _, t in flat],
        batches,
        size,
        range_tensors=[t for tensors in range_tensors.values() for t in tensors],
    )
    for index, outputs in enumerate(values, 1):
        for (name, _), output in zip(flat, outputs[: len(flat)], strict=True):
            samples[name].append(output)
        for name, (low, high) in zip(range_names, outputs[len(flat) :], strict=True):
            old_low, old_high = ranges.get(name, (low, high))
            ranges[name] = (float(min(low, old_low)), float(max(high, old_high)))
        progress.update(index)
    # Finite inputs can still overflow float32 inside the model.
    broken = [
        f"input of layer '{name}'"
        for name in names
        if not all(np.isfinite(part).all() for part in samples[name])
    ]
    broken += [
        f"output of layer '{name}'"
        for name, bounds in ranges.items()
        if not np.isfinite(bounds).all()
    ]
    if broken:
        raise DataError(
            f"calibration_data: the {broken[0]} holds NaN or Inf values in the float model (the "
            "data overflows float32 on its way there); scale the data as the model expects it."
        )
    # NumPy releases the GIL inside the search's sort: layers run in parallel.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        clips = pool.map(
            lambda name: ifmr_clip_range(np.concatenate(samples[name]), *settings[name]), names
        )
        return dict(zip(names, clips, strict=True)), ranges
