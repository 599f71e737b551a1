import numpy as np
import pytest
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import ActivatedOutputQuantizer, TrackedRangeQuantizer
from keras_qat.quantizers.tracked import EMA_DECAY
from tests.reference import ulq


def built(floor=None, ceiling=None):
    quantizer = TrackedRangeQuantizer(floor, ceiling)
    holder = keras.layers.Layer()
    return quantizer, quantizer.build((None, 4), "output", holder)


def test_inference_rounds_on_the_range_and_does_not_move_it():
    quantizer, variables = built()
    TrackedRangeQuantizer.assign_range(variables, -1.0, 3.0)
    # Below, at and beyond the bounds, a tie between two levels, zero.
    step = 4.0 / 255
    x = np.array([[-2.0, -1.0, 0.0, 3.0], [5.0, 0.5 * step, 1.5 * step, 1.0]], np.float32)
    got = quantizer(tf.constant(x), False, variables).numpy()
    np.testing.assert_allclose(got, ulq(x, -1.0, 3.0, 8), atol=1e-6)
    assert [v.numpy() for v in variables.values()] == [-1.0, 3.0]


@pytest.mark.parametrize(
    ("floor", "ceiling", "batch", "want"),
    [
        (None, None, [-4.0, 10.0], (-4.0, 10.0)),
        (None, None, [2.0, 10.0], (0.0, 10.0)),  # the range keeps 0
        (0.0, None, [-4.0, 10.0], (0.0, 10.0)),  # after a fused ReLU
        (0.0, 6.0, [-4.0, 10.0], (0.0, 6.0)),  # after a fused ReLU6
    ],
)
def test_training_moves_the_range_by_moving_average(floor, ceiling, batch, want):
    quantizer, variables = built(floor, ceiling)
    TrackedRangeQuantizer.assign_range(variables, -1.0, 3.0)
    start = np.array([v.numpy() for v in variables.values()])
    start = np.array([max(start[0], floor) if floor is not None else start[0], start[1]])
    x = tf.constant(np.linspace(*batch, 8, dtype=np.float32).reshape(2, 4))
    quantizer(x, True, variables)
    got = np.array([v.numpy() for v in variables.values()])
    expected = EMA_DECAY * np.array([-1.0, 3.0]) + (1 - EMA_DECAY) * np.array(want)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_uncalibrated_range_has_a_whole_zero_point():
    # A tie in the zero point (127.5 at [-6, 6]) is rounded apart by the
    # converter and the op; the starting range must not have one.
    _, variables = built()
    low, high = (float(v.numpy()) for v in variables.values())
    zero_point = -low / ((high - low) / 255)
    assert zero_point == round(zero_point)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    ("activation", "function", "grid"),
    [
        ("softmax", softmax, (0.0, 255 / 256)),
        ("sigmoid", lambda x: 1 / (1 + np.exp(-x)), (0.0, 255 / 256)),
        ("tanh", np.tanh, (-1.0, 127 / 128)),
        # No fixed int8 grid: the file computes these in float.
        ("softplus", lambda x: np.log1p(np.exp(x)), None),
        ("swish", lambda x: x / (1 + np.exp(-x)), None),
    ],
)
def test_activated_output_rounds_then_activates_as_the_file_does(activation, function, grid):
    quantizer = ActivatedOutputQuantizer(activation)
    assert quantizer.runs_in_float == (grid is None)
    variables = quantizer.build((None, 4), "output", keras.layers.Layer())
    # A step of 1/32: ties between two levels are exact in float32.
    high = 4.0 * 127 / 128
    TrackedRangeQuantizer.assign_range(variables, -4.0, high)
    step = 1 / 32
    # Beyond both bounds, ties between two levels, zero, near the grid's top.
    x = np.array([[-9.0, 0.5 * step, -3.5 * step, 9.0], [0.0, 1.5 * step, 2.0, -2.0]], np.float32)
    got = quantizer(tf.constant(x), False, variables).numpy()
    want = function(ulq(x, -4.0, high, 8))
    if grid is not None:
        want = ulq(want, *grid, 8)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert ActivatedOutputQuantizer.from_config(quantizer.get_config()).activation == activation
