"""Statistics for comparing two runs that answered the same questions (paired) or only their counts
(unpaired), torch-free and dependency-free (the exact binomial by ``math.comb``).

Paired, with the 2x2 table of question outcomes (``a``: both right, ``b``: only A right, ``c``: only
B right, ``d``: both wrong; ``n = a + b + c + d``):

- exact McNemar: under "no difference" each discordant question is A's with probability 1/2, so
  ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``;
- the difference ``(b - c) / n`` with Newcombe's hybrid score interval for paired proportions
  (Newcombe 1998, Stat Med 17:2635, method 10): each proportion's Wilson interval, combined with the
  phi correlation of the table;
- the minimum detectable difference at 80% power and two-sided alpha 0.05 from the discordance rate
  ``psi = (b + c) / n`` (Connor 1987): the ``delta`` solving
  ``sqrt(n) * delta = z_a * sqrt(psi) + z_b * sqrt(psi - delta^2)``.

Unpaired (runs whose question outcomes were not recorded): the two-proportion z test with the pooled
variance, and the minimum detectable difference ``(z_a + z_b) * sqrt(2 * p * (1 - p) / n)`` per arm.
Across the comparisons of one report: Holm's step-down correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from fedgrpo.run.intervals import wilson_interval

Z_ALPHA = NormalDist().inv_cdf(1 - 0.05 / 2)  # two-sided alpha 0.05
Z_POWER = NormalDist().inv_cdf(0.80)  # 80% power


@dataclass(frozen=True)
class PairedTable:
    """Question outcomes of runs A and B, paired: ``b`` only A right, ``c`` only B right."""

    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0

    @classmethod
    def of(cls, first: str, second: str) -> PairedTable:
        """From two ``0``/``1`` strings, character i of each the same question."""
        if len(first) != len(second):
            raise ValueError("paired outcomes need the same questions")
        pairs = list(zip(first, second, strict=True))
        return cls(*(pairs.count(p) for p in (("1", "1"), ("1", "0"), ("0", "1"), ("0", "0"))))

    def __add__(self, other: PairedTable) -> PairedTable:
        return PairedTable(self.a + other.a, self.b + other.b, self.c + other.c, self.d + other.d)

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def paired_difference(t: PairedTable, z: float = Z_ALPHA) -> tuple[float, float, float]:
    """``p_A - p_B`` with Newcombe's 95% interval for paired proportions (method 10)."""
    n = t.n
    p1, p2 = (t.a + t.b) / n, (t.a + t.c) / n
    (l1, u1), (l2, u2) = wilson_interval(t.a + t.b, n, z), wilson_interval(t.a + t.c, n, z)
    margins = (t.a + t.b) * (t.c + t.d) * (t.a + t.c) * (t.b + t.d)
    phi = (t.a * t.d - t.b * t.c) / math.sqrt(margins) if margins else 0.0
    diff = p1 - p2
    down = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    up = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return diff, diff - down, diff + up


def paired_mdd(discordance: float, n: int) -> float | None:
    """Connor's smallest difference a paired test of ``n`` questions detects (80% power, alpha 0.05)
    at discordance rate ``psi``: the larger root of ``(n + z_b^2) d^2 - 2 sqrt(n) A d + A^2 - z_b^2 psi
    = 0`` with ``A = z_a sqrt(psi)`` (the equation squared). None when nothing is discordant or n is
    too small for any difference up to ``sqrt(psi)`` to be detectable."""
    if discordance <= 0 or n <= Z_ALPHA**2:
        return None
    s, a, zb2 = math.sqrt(n), Z_ALPHA * math.sqrt(discordance), Z_POWER**2
    root = (s * a) ** 2 - (n + zb2) * (a * a - zb2 * discordance)
    return (s * a + math.sqrt(root)) / (n + zb2)


def unpaired_p(c1: int, n1: int, c2: int, n2: int) -> float:
    """Two-sided p-value of the two-proportion z test with the pooled variance."""
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return 2 * (1 - NormalDist().cdf(abs(c1 / n1 - c2 / n2) / se))


def unpaired_mdd(accuracy: float, n: int) -> float:
    """The smallest difference two independent arms of ``n`` questions each detect around
    ``accuracy`` (80% power, alpha 0.05)."""
    return (Z_ALPHA + Z_POWER) * math.sqrt(2 * accuracy * (1 - accuracy) / n)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's adjusted p-values, in the input's order: the i-th smallest times ``(m - i)`` (i from 0),
    made non-decreasing, capped at 1."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
