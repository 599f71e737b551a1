"""IFMR: the initial clip range of an activation, by a search over clip values.

Formula (SPEC.md section 3): `max_v`, `min_v` are the values at percentile
0.999999 from the top and the bottom (widened to include 0), `M = max(|max_v|,
|min_v|)`. For `c = r * M`, r = 0.70, 0.71, ..., 1.30, the symmetric step is
`s = c / qmax` (`c / (qmax + 1)` when the larger magnitude is negative) and the
error `mean((round(clip(x, -c, c) / s) * s - x)^2)`; the best c gives
`clip_max = qmax * s`, `clip_min = -(qmax + 1) * s` (0 with `fixed_min`).
"""

import numpy as np

PERCENTILE = 0.999999
RATIOS = np.round(np.arange(0.70, 1.30 + 1e-9, 0.01), 2)

# Above this many values the search runs on a uniform sample: 61 candidates
# times the full activations would cost far more than the forward passes.
MAX_SAMPLES = 1 << 18


def _round_half_up(values):
    return np.floor(values + 0.5)


def ifmr_clip_range(values, num_bits=8, fixed_min=False):
    """Searches the clip range that minimises the quantization error of `values`.

    Example:

    >>> [round(v, 4) for v in ifmr_clip_range(np.linspace(-1.0, 1.0, 1001), num_bits=8)]
    [1.0, -1.0079]

    Args:
        values: Observed activations (any shape, float).
        num_bits: Bit width of the activation quantizer. Defaults to `8`.
        fixed_min: The lower bound is pinned at 0. Defaults to `False`.

    Returns:
        `(clip_max, clip_min)` as Python floats.
    """
    x = np.asarray(values, np.float64).ravel()
    qmax = 2 ** (num_bits - 1) - 1
    high = max(float(np.quantile(x, PERCENTILE)), 0.0)
    low = min(float(np.quantile(x, 1 - PERCENTILE)), 0.0)
    magnitude = max(high, -low)
    if magnitude == 0.0:  # all zeros: any positive range is exact
        return 1.0, (0.0 if fixed_min else -1.0)
    divisor = qmax + 1 if -low > high else qmax
    steps = RATIOS * magnitude / divisor
    # The 61 x N error table is the cost of calibration: float32 runs it
    # several times faster than float64 and keeps the same argmin.
    x32 = x.astype(np.float32)[None, :]
    clips32 = (steps * divisor).astype(np.float32)[:, None]
    steps32 = steps.astype(np.float32)[:, None]
    quantized = _round_half_up(np.clip(x32, -clips32, clips32) / steps32) * steps32
    errors = np.mean(np.square(quantized - x32, dtype=np.float32), axis=1, dtype=np.float64)
    step = float(steps[int(np.argmin(errors))])
    return qmax * step, (0.0 if fixed_min else -(qmax + 1) * step)


class ActivationSampler:
    """Keeps a bounded uniform sample of a layer's inputs over several batches.

    Args:
        expected_batches: How many batches will be added (`batch_num`).
        seed: Sampling seed, for repeatable calibration. Defaults to `0`.
    """

    def __init__(self, expected_batches, seed=0):
        self._per_batch = -(-MAX_SAMPLES // expected_batches)
        self._rng = np.random.default_rng(seed)
        self._parts = []

    def add(self, batch):
        """Adds one batch of activations (any shape)."""
        flat = np.asarray(batch, np.float32).ravel()
        if flat.size > self._per_batch:
            flat = self._rng.choice(flat, self._per_batch, replace=False)
        self._parts.append(flat)

    def values(self):
        """Returns the sampled values as one flat array."""
        return np.concatenate(self._parts)
