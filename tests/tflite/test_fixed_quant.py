"""The export copy's frozen input quantizers compute the QAT model's numbers."""

import numpy as np
import pytest
import reference
import tensorflow as tf

from keras_qat.quantizers import InputQuantizeLayer, UlqQuantizer, ranges
from keras_qat.tflite.fixed_quant import FixedInputQuantizer, unambiguous_bounds

HAND_WRITTEN = [(-a, b) for a in (0.0, 0.25, 1.0, 1.3, 4.0) for b in (0.25, 1.0, 2.1, 4.0)]
RANDOM = [(-a, b) for a, b in np.random.default_rng(0).uniform([0, 0.01], 5, (200, 2))]


def edge_values(clip_min, clip_max, bits):
    """Every level, the half-way points between levels (ties), the bounds and beyond."""
    step = (clip_max - clip_min) / (2**bits - 1)
    levels = clip_min + step * np.arange(2**bits)
    return np.concatenate(
        [levels, levels + step / 2, [clip_min, clip_max, clip_min - 3 * step, clip_max + 3 * step]]
    ).astype(np.float32)


@pytest.mark.parametrize("cap", [False, True], ids=["bare", "capped"])
@pytest.mark.parametrize("dst_type", ["INT8", "INT4"])
@pytest.mark.parametrize(
    ("clip_min", "clip_max"),
    [(-1.0, 1.0), (-0.5, 7 / 16), (0.0, 2.55), (-1.3, 2.1)],
    ids=["symmetric-tie", "power-of-two", "fixed-min", "hand-written"],
)
def test_frozen_quantizer_matches_the_trained_one(dst_type, clip_min, clip_max, cap):
    layer = InputQuantizeLayer(UlqQuantizer(dst_type, clip_min=clip_min, clip_max=clip_max))
    x = edge_values(clip_min, clip_max, 8 if dst_type == "INT8" else 4)
    want = layer(x).numpy()
    frozen = FixedInputQuantizer.freeze(layer, cap)
    restored = FixedInputQuantizer.from_config(frozen.get_config())
    for got in (frozen(x).numpy(), tf.function(restored)(x).numpy()):
        if dst_type == "INT8":
            np.testing.assert_array_equal(got, want)
        else:  # the carrier's 8-bit step is the 4-bit one up to float32 rounding
            np.testing.assert_allclose(got, want, atol=1e-6)


def float64_zero_point(clip_min, clip_max):
    """The zero point as float64 nudging (the converter's) finds it."""
    low, _, scale = reference.nudged(clip_min, clip_max, 8)
    return int(np.round(-low / scale))


def fake_quant(x, clip_min, clip_max):
    return tf.quantization.fake_quant_with_min_max_vars(
        x, tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32), num_bits=8
    ).numpy()


def test_raw_symmetric_bounds_are_ambiguous():
    assert ranges.op_nudge(-1.0, 1.0, 8).zero_point == 127
    assert float64_zero_point(-1.0, 1.0) == 128


def test_unambiguous_bounds_round_as_the_clip_range_and_agree_in_float64():
    for clip_min, clip_max in HAND_WRITTEN + RANDOM:
        low, high = unambiguous_bounds(clip_min, clip_max)
        x = edge_values(clip_min, clip_max, 8)
        np.testing.assert_array_equal(fake_quant(x, low, high), fake_quant(x, clip_min, clip_max))
        zero_point = ranges.op_nudge(clip_min, clip_max, 8).zero_point
        assert float64_zero_point(low, high) == zero_point, (clip_min, clip_max)
