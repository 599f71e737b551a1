"""The export copy's frozen input quantizers compute the QAT model's numbers."""

import numpy as np
import pytest
import reference
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import InputQuantizeLayer, OutputQuantizeLayer, UlqQuantizer, ranges
from keras_qat.quantizers.introspection import output_range_vars
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
        # The converter's step, from the float64 difference, is the op's.
        width = np.float32(clip_max) - np.float32(clip_min)
        assert np.float64(high) - np.float64(low) == np.float64(width), (clip_min, clip_max)


def float64_width_ranges(count, seed=0):
    """Ranges whose float64 width over 255 is another float32 step than the op's."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        low, high = np.float32(rng.uniform(-3, -0.1)), np.float32(rng.uniform(0.5, 4))
        op_step = (high - low) / np.float32(255)
        if np.float32((np.float64(high) - np.float64(low)) / 255) != op_step:
            found.append((float(low), float(high), op_step))
    return found


def test_tracked_ranges_reach_the_file_on_the_ops_step(tmp_path):
    # Two convolutions added (their outputs and the sum are tracked ranges,
    # no input quantizer reads them), the sum averaged for a Dense.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Add(name="sum")([a, b]))
    model = keras.Model(inputs, keras.layers.Dense(3, name="d")(pooled))
    data = np.random.default_rng(1).normal(size=(32, 6, 6, 3)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {name: {} for name in "abd"}, data)
    tracked = [output_range_vars(qat.get_layer(name)) for name in ("a", "b")]
    tracked += [v.quantizer_vars for v in qat.layers if isinstance(v, OutputQuantizeLayer)]
    assert len(tracked) == 3
    planted = float64_width_ranges(len(tracked))
    for variables, (low, high, _) in zip(tracked, planted, strict=True):
        variables["range_min"].assign(low)
        variables["range_max"].assign(high)

    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    tensors = Interpreter(model_path=str(path)).get_tensor_details()
    steps = {np.float32(t["quantization"][0]) for t in tensors}
    assert {step for *_, step in planted} <= steps, sorted(steps)
    # The export moved the copy's ranges, not the QAT model's.
    assert all(float(v["range_min"]) == low for v, (low, *_) in zip(tracked, planted, strict=True))
