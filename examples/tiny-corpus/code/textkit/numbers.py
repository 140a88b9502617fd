"""Small numeric helpers."""

import math
import statistics


def clamp_all(values, low, high):
    """Each value limited to the closed interval [low, high]."""
    if low > high:
        raise ValueError("low must not exceed high")
    return [min(max(v, low), high) for v in values]


def geometric_mean(values):
    """Geometric mean of positive numbers."""
    if not values or any(v <= 0 for v in values):
        raise ValueError("geometric_mean needs positive numbers")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def zscores(values):
    """Standard scores of values (population standard deviation); all zeros when they are equal."""
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values)
    if spread == 0:
        return [0.0 for _ in values]
    return [(v - mean) / spread for v in values]


def round_to_step(value, step):
    """value rounded down to a multiple of step."""
    return math.floor(value / step) * step
