"""Success-rate statistics."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95 %); ``(0, 1)`` for zero trials."""
    if isinstance(successes, bool) or isinstance(trials, bool) or int(successes) != successes \
            or int(trials) != trials:
        raise ValueError(f"wilson_interval: successes and trials must be integers, found {successes!r}, {trials!r}")
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"wilson_interval: expected 0 <= successes <= trials, found {successes} of {trials}")
    if not z > 0:
        raise ValueError(f"wilson_interval: z must be positive, found {z}")
    if trials == 0:
        return 0.0, 1.0
    n, p = float(trials), successes / trials
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
