import numpy as np
import pytest
import reference

from keras_qat.calibration.ifmr import MAX_SAMPLES, ActivationSampler, ifmr_clip_range

rng = np.random.default_rng(9)
DATA = {
    "normal": rng.normal(size=5000),
    "relu": np.maximum(rng.normal(size=5000), 0),
    "negative-heavy": -np.abs(rng.laplace(size=5000)) + 0.1,
    "outliers": np.concatenate([rng.normal(size=5000), [40.0, -35.0]]),
    "uniform": rng.uniform(-2, 3, 5000),
}


@pytest.mark.parametrize("bits", [8, 4], ids=["INT8", "INT4"])
@pytest.mark.parametrize("fixed_min", [False, True], ids=["signed", "fixed-min"])
@pytest.mark.parametrize("name", list(DATA))
def test_matches_brute_force_reference(name, fixed_min, bits):
    got = ifmr_clip_range(DATA[name], bits, fixed_min)
    np.testing.assert_allclose(got, reference.ifmr(DATA[name], bits, fixed_min), rtol=1e-12)


def test_negative_dominant_uses_qmax_plus_one():
    clip_max, clip_min = ifmr_clip_range(DATA["negative-heavy"], 8)
    assert clip_min == pytest.approx(-clip_max * 128 / 127)


def test_all_zero_input_gives_a_valid_range():
    assert ifmr_clip_range(np.zeros(100)) == (1.0, -1.0)
    assert ifmr_clip_range(np.zeros(100), fixed_min=True) == (1.0, 0.0)


def test_sampler_memory_is_bounded():
    sampler = ActivationSampler(expected_batches=4)
    for _ in range(4):
        sampler.add(np.ones((64, 32, 32, 16), np.float32))
    assert sampler.values().size <= MAX_SAMPLES + 4
    small = ActivationSampler(expected_batches=2)
    small.add(np.arange(10.0))
    small.add(np.arange(5.0))
    np.testing.assert_array_equal(small.values(), np.r_[np.arange(10.0), np.arange(5.0)])
