"""`ranges.op_nudge` against the fake-quant op it reproduces."""

import numpy as np
import pytest
import tensorflow as tf

from keras_qat.quantizers import ranges

# Hand-written ranges: symmetric ones put the zero point on a tie at 8 bits
# (127.5), where float32 and float64 nudging disagree for [-1, 1].
HAND_WRITTEN = [(-a, b) for a in (0.05, 0.25, 0.5, 1.0, 1.3, 4.0) for b in (0.25, 1.0, 2.1, 4.0)]
RANDOM = [(-a, b) for a, b in np.random.default_rng(0).uniform([0, 0.01], 5, (200, 2))]
CLIPPED = [(0.0, 1.0), (0.5, 2.0), (-2.0, -0.5)]  # zero point clipped to 0 / to 2^b - 1


def op_grid(clip_min, clip_max, bits):
    """The op's own nudged bounds: its output for inputs far below and above."""
    far = tf.constant([-1e9, 1e9], tf.float32)
    low, high = tf.quantization.fake_quant_with_min_max_vars(
        far, clip_min, clip_max, num_bits=bits
    ).numpy()
    return low, high


@pytest.mark.parametrize("bits", [8, 4])
def test_op_nudge_is_the_ops_grid_bit_for_bit(bits):
    for clip_min, clip_max in HAND_WRITTEN + RANDOM + CLIPPED:
        grid = ranges.op_nudge(clip_min, clip_max, bits)
        low, high = op_grid(clip_min, clip_max, bits)
        assert (np.float32(grid.low), np.float32(grid.high)) == (low, high), (clip_min, clip_max)
        assert grid.low == pytest.approx(-grid.zero_point * grid.scale)


def test_op_nudge_rounds_the_tie_as_the_op_does():
    # float32: 1 / float32(2/255) = 127.49999 -> 127; exact arithmetic gives 127.5 -> 128.
    grid = ranges.op_nudge(-1.0, 1.0, 8)
    assert grid.zero_point == 127
    assert np.float32(grid.scale) == np.float32(2) / np.float32(255)
    assert grid.high == pytest.approx(128 * 2 / 255)
