import numpy as np
import pytest
import reference

from keras_qat.calibration.ifmr import ifmr_clip_range, quantization_errors

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


@pytest.mark.parametrize("levels", [127, 128, 7, 8])
def test_error_table_equals_the_direct_formula(levels):
    steps = np.array([0.25, 0.5, 1 / 3, 0.01, 3.0])
    grid = np.arange(-levels - 2, levels + 3)
    x = np.concatenate(
        [
            grid * 0.25,  # on the levels of step 0.25, and beyond +-K s
            (grid + 0.5) * 0.25,  # ties, exact in binary for steps 0.25 and 0.5
            [levels * 0.5, -levels * 0.5, 3.0 * levels, -3.0 * levels, 0.0, 0.0],
            rng.normal(scale=levels / 4, size=2000),
        ]
    )
    direct = [
        np.mean((reference.round_half_up(np.clip(x, -levels * s, levels * s) / s) * s - x) ** 2)
        for s in steps
    ]
    np.testing.assert_allclose(quantization_errors(np.sort(x), steps, levels), direct, rtol=1e-9)


def test_error_table_of_all_zero_values_is_zero():
    errors = quantization_errors(np.zeros(64), np.array([0.1, 1.0]), 127)
    np.testing.assert_array_equal(errors, [0.0, 0.0])


def test_float32_activations_match_the_reference():
    values = rng.normal(size=20_000).astype(np.float32) ** 3
    got = ifmr_clip_range(values, 8)
    np.testing.assert_allclose(got, reference.ifmr(values, 8, False), rtol=1e-12)


def test_negative_dominant_uses_qmax_plus_one():
    clip_max, clip_min = ifmr_clip_range(DATA["negative-heavy"], 8)
    assert clip_min == pytest.approx(-clip_max * 128 / 127)


def test_all_zero_input_gives_a_valid_range():
    assert ifmr_clip_range(np.zeros(100)) == (1.0, -1.0)
    assert ifmr_clip_range(np.zeros(100), fixed_min=True) == (1.0, 0.0)
