"""Intervals for accuracies: Wilson's for one proportion, Newcombe's for the difference of two.
Torch-free, so that the suite's report and statistics can use them without loading a model stack."""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; sound at 0 and n, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(c1: int, n1: int, c2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """``p1 - p2`` of two proportions with its 95% interval: Newcombe's hybrid score interval (1998,
    method 10), made of each proportion's Wilson interval, sound near 0 and 1 where the normal one
    is not. (statsmodels' ``confint_proportions_2indep(method="newcomb")`` is the same interval; four
    lines do not warrant that dependency.) For two runs scored on the same questions it is
    conservative: their results are paired, which would only narrow it."""
    p1, p2 = c1 / n1, c2 / n2
    (l1, u1), (l2, u2) = wilson_interval(c1, n1, z), wilson_interval(c2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
