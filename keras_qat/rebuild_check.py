"""Whether a rebuilt model computes what the model it was rebuilt from computes."""

import numpy as np
import tensorflow as tf


def sample_inputs(model, seed=0):
    """Sample inputs for each of `model`'s inputs: 4 rows of unit normals (non-batch None -> 8).

    Args:
        model: A Keras model (tf_keras or Keras 3).
        seed: Random seed. Defaults to `0`.

    Returns:
        A list of arrays, one per input; integer inputs get small non-negative values.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for tensor in model.inputs:
        shape = [4, *(8 if d is None else d for d in tensor.shape[1:])]
        dtype = np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
        values = rng.normal(size=shape)
        samples.append(values.astype(dtype) if dtype.kind == "f" else np.abs(values).astype(dtype))
    return samples


def differing_samples(original, rebuilt):
    """Runs both models on `sample_inputs`; returns those inputs if the outputs differ.

    Args:
        original: The model as given.
        rebuilt: Its rebuild, same inputs and outputs.

    Returns:
        `None` when every output agrees within float rounding
        (1e-4 x (1 + max |output|)), else the sample inputs, for locating the
        difference.
    """
    samples = sample_inputs(original)
    if len(samples) == 1:
        samples = samples[0]
    want = tf.nest.flatten(original(samples, training=False))
    got = tf.nest.flatten(rebuilt(samples, training=False))
    for expected, actual in zip(want, got, strict=True):
        expected, actual = np.asarray(expected), np.asarray(actual)
        tolerance = 1e-4 * (1.0 + float(np.max(np.abs(expected), initial=0.0)))
        if expected.shape != actual.shape or np.max(np.abs(expected - actual)) > tolerance:
            return samples
    return None
