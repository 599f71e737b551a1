"""The user's sample data (calibration, representative, check): its forms, batches and checks.

A NumPy array, or a list/tuple/dict of arrays (one per model input), is a
whole data set; a `tf.data.Dataset`, a generator or any other iterable yields
one batch per element, x or (x, y[, sample_weight]). A tf.Tensor counts as an
array, and a single-input model takes its array alone or as `[x]`/`(x,)`.
"""

import numpy as np
import tensorflow as tf

from keras_qat import functional
from keras_qat.errors import DataError


def _features(element, input_count):
    """Takes x out of an x or (x, y[, sample_weight]) element."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        first = element[0]
        if input_count == 1 or isinstance(first, (list, tuple, dict)):
            return first
    return element


def _as_input_list(features, model, what):
    names = functional.input_names(model)
    if isinstance(features, dict):
        missing = [n for n in names if n not in features]
        if missing:
            raise DataError(
                f"{what}: a dict batch must hold every model input. "
                f"Missing: {missing}. Received keys: {sorted(features)}"
            )
        return [features[n] for n in names]
    if isinstance(features, (list, tuple)):
        # For one input a list is that input's rows, unless it holds one array: [x].
        per_input = len(names) > 1 or (len(features) == 1 and _is_array(features[0]))
        if per_input and len(features) != len(names):
            raise DataError(
                f"{what}: the model has {len(names)} input(s) {names}; each batch must be "
                f"one array per input (or (x, y) with such an x). Received: {len(features)} arrays"
            )
        if per_input:
            return list(features)
    if len(names) > 1:
        raise DataError(
            f"{what}: the model has {len(names)} inputs {names}; each batch must "
            "be a list or dict of as many arrays (or (x, y) with such an x)."
        )
    return [features]


def _checked(batch, model, index, what):
    arrays = [np.asarray(a) for a in _as_input_list(batch, model, what)]
    checked = []
    for array, tensor, name in zip(
        arrays, model.inputs, functional.input_names(model), strict=True
    ):
        expected = tuple(tensor.shape)
        if len(array.shape) != len(expected) or any(
            e is not None and e != r for e, r in zip(expected, array.shape, strict=True)
        ):
            raise DataError(
                f"{what} batch {index}: input '{name}' expects shape {expected}. "
                f"Received: shape={array.shape}"
            )
        dtype = tensor.dtype.as_numpy_dtype
        if np.issubdtype(dtype, np.floating):
            # Checked in the model's own dtype: float64 data beyond float32's
            # range is finite until the model reads it.
            with np.errstate(over="ignore", invalid="ignore"):
                array = array.astype(dtype, copy=False)
            if not np.isfinite(array).all():
                raise DataError(
                    f"{what} batch {index}: input '{name}' contains NaN or Inf values "
                    f"(in the model's dtype {np.dtype(dtype).name})."
                )
        checked.append(array)
    return checked


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor))


def is_array_set(data):
    """An array or tf.Tensor, or a list/tuple/dict of them: a whole data set."""
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (list, tuple)):
        return bool(data) and all(_is_array(a) for a in data)
    return _is_array(data)


def _numpy(data):
    return tf.nest.map_structure(np.asarray, data)


def _split_arrays(data, count, what):
    data = _numpy(data)
    arrays = tf.nest.flatten(data)
    size = len(arrays[0])
    if size < count:
        raise DataError(f"{what} has {size} samples, fewer than batch_num={count}.")
    parts = [np.array_split(a, count) for a in arrays]
    return (tf.nest.pack_sequence_as(data, [p[i] for p in parts]) for i in range(count))


def iterate_batches(data, batch_num, model, what="calibration_data"):
    """Yields `batch_num` checked batches, each a list of arrays (one per model input).

    An array set is split into `batch_num` batches; an iterable yields one
    batch per element.

    Args:
        data: The data (see the module docstring).
        batch_num: How many batches to take.
        model: The model the batches are fed to.
        what: The argument's name, for error messages. Defaults to
            `"calibration_data"`.

    Yields:
        Lists of NumPy arrays.

    Raises:
        DataError: for a batch of the wrong form or shape, with NaN/Inf, or
            too few batches.
    """
    elements = _split_arrays(data, batch_num, what) if is_array_set(data) else iter(data)
    for index in range(1, batch_num + 1):
        try:
            element = next(elements)
        except StopIteration:
            raise DataError(
                f"{what} yielded {index - 1} batch(es), fewer than "
                f"batch_num={batch_num}. Give more data or lower batch_num in the config."
            ) from None
        yield _checked(_features(element, len(model.inputs)), model, index, what)


def sample_batches(data, model, what, batch_size, max_samples=None, max_batches=None):
    """Checked batches of `data`: an array set cut into `batch_size` pieces, an iterable as is.

    Args:
        data: The data (see the module docstring).
        model: The model the batches are fed to.
        what: The argument's name, for error messages.
        batch_size: Samples per batch cut from an array set.
        max_samples: Take at most this many samples of an array set (all when
            `None`). Defaults to `None`.
        max_batches: Take at most this many elements of an iterable (all when
            `None`). Defaults to `None`.

    Returns:
        A list of batches, each a list of arrays (one per model input).

    Raises:
        DataError: as `iterate_batches`, and for data holding no sample.
    """
    if is_array_set(data):
        data = _numpy(data)
        arrays = tf.nest.flatten(data)
        count = len(arrays[0]) if max_samples is None else min(len(arrays[0]), max_samples)
        elements = [
            tf.nest.pack_sequence_as(data, [a[start : start + batch_size] for a in arrays])
            for start in range(0, count, batch_size)
        ]
    else:
        elements = []
        for element in data:
            if max_batches is not None and len(elements) >= max_batches:
                break
            elements.append(element)
    if not elements:
        raise DataError(f"{what} holds no sample.")
    return list(iterate_batches(iter(elements), len(elements), model, what))
