"""IFMR: the initial clip range of an activation, by a search over clip values.

Formula (AMCT's IFMR): `max_v`, `min_v` are the values at percentile
0.999999 from the top and the bottom (widened to include 0), `M = max(|max_v|,
|min_v|)`. For `c = r * M`, r = 0.70, 0.71, ..., 1.30, the symmetric step is
`s = c / qmax` (`c / (qmax + 1)` when the larger magnitude is negative) and the
error `mean((round(clip(x, -c, c) / s) * s - x)^2)`; the best c gives
`clip_max = qmax * s`, `clip_min = -(qmax + 1) * s` (0 with `fixed_min`).
"""

import numpy as np

PERCENTILE = 0.999999
RATIOS = np.round(np.arange(0.70, 1.30 + 1e-9, 0.01), 2)

# Above this many values the search runs on a uniform sample, which bounds
# both the memory kept over `batch_num` batches and the time of the sort.
MAX_SAMPLES = 1 << 18


def _quantile(sorted_values, fraction):
    """`np.quantile(values, fraction)` (linear interpolation) of already sorted values."""
    position = fraction * (sorted_values.size - 1)
    below = int(np.floor(position))
    above = min(below + 1, sorted_values.size - 1)
    weight = position - below
    return float(sorted_values[below] + weight * (sorted_values[above] - sorted_values[below]))


def quantization_errors(sorted_values, steps, levels):
    """Mean squared error of `round(clip(x, -K*s, K*s) / s) * s` for each step `s`.

    Exact, without a pass over the data per step: with rounding half up,
    level k takes the x in [(k - 0.5) s, (k + 0.5) s), the outer levels +-K
    everything beyond (clipped values land on them too), and a level's error
    `sum((x - k s)^2) = S2 - 2 k s S1 + (k s)^2 n` comes from sums of x and
    x^2 between the level edges, found by binary search in the sorted data.
    (An x exactly on an edge is s/2 from both levels: either side gives the
    same error.) The sums between all edges of all steps take one pass
    (`np.add.reduceat`); cumulated, they give each level's sums.

    Args:
        sorted_values: Ascending float64 values.
        steps: Candidate steps, shape `(candidates,)`.
        levels: K: the integer grid is -K..K.

    Returns:
        Errors, shape `(candidates,)`.
    """
    count = sorted_values.size
    grid = np.arange(-levels, levels + 1, dtype=np.float64)
    edges = (grid[1:] - 0.5)[None, :] * steps[:, None]
    ends = np.ones((len(steps), 1), np.int64)
    bounds = np.concatenate([0 * ends, np.searchsorted(sorted_values, edges), count * ends], 1)
    marks, slots = np.unique(bounds, return_inverse=True)
    slots = slots.reshape(bounds.shape)

    def level_sums(values):
        below_marks = np.concatenate([[0.0], np.cumsum(np.add.reduceat(values, marks[:-1]))])
        return np.diff(below_marks[slots], axis=1)

    level_values = grid[None, :] * steps[:, None]
    errors = (
        level_sums(np.square(sorted_values))
        - 2.0 * level_values * level_sums(sorted_values)
        + np.square(level_values) * np.diff(bounds, axis=1)
    )
    return errors.sum(axis=1) / count


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
    # Sorted in the values' own dtype (float32 activations sort twice as fast
    # as float64); the sums run in float64.
    x = np.sort(np.ravel(values)).astype(np.float64)
    qmax = 2 ** (num_bits - 1) - 1
    high = max(_quantile(x, PERCENTILE), 0.0)
    low = min(_quantile(x, 1 - PERCENTILE), 0.0)
    magnitude = max(high, -low)
    if magnitude == 0.0:  # all zeros: any positive range is exact
        return 1.0, (0.0 if fixed_min else -1.0)
    divisor = qmax + 1 if -low > high else qmax
    steps = RATIOS * magnitude / divisor
    step = float(steps[int(np.argmin(quantization_errors(x, steps, divisor)))])
    return qmax * step, (0.0 if fixed_min else -(qmax + 1) * step)
