"""The report's paired statistics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from fedgrpo.run.intervals import difference_interval, wilson_interval
from fedgrpo.suite.paired import (
    PairedTable,
    holm,
    mcnemar_exact,
    paired_difference,
    paired_mdd,
    unpaired_mdd,
    unpaired_p,
)


def test_exact_mcnemar_is_twice_the_binomial_tail_of_the_smaller_discordant_count() -> None:
    # b=10, c=2: 2 * P(X <= 2 | 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)  # two-sided
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # five discordant, all one way
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0  # capped; nothing to test


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_and_keeps_the_order() -> None:
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06; back in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_paired_table_counts_the_four_kinds_of_question_and_pools_by_adding() -> None:
    t = PairedTable.of("110010", "101000")  # both, only A, only B, neither, only A, neither
    assert (t.a, t.b, t.c, t.d, t.n) == (1, 2, 1, 2, 6)
    assert t + PairedTable(1, 0, 3, 0) == PairedTable(2, 2, 4, 2)
    with pytest.raises(ValueError, match="same questions"):
        PairedTable.of("10", "1")


def test_newcombe_paired_interval_by_hand() -> None:
    # a=30, b=10, c=2, d=18 (n=60): p_A = 40/60, p_B = 32/60, difference 8/60 = 0.1333;
    # phi = (30*18 - 10*2) / sqrt(40*20*32*28) = 520 / 846.64 = 0.6142
    t = PairedTable(30, 10, 2, 18)
    (l1, u1), (l2, u2) = wilson_interval(40, 60), wilson_interval(32, 60)
    phi = 520 / math.sqrt(40 * 20 * 32 * 28)
    p1, p2 = 40 / 60, 32 / 60
    low = (p1 - p2) - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = (p1 - p2) + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    d, lo, hi = paired_difference(t)
    assert (d, lo, hi) == pytest.approx((8 / 60, low, high), abs=1e-4)
    assert (lo, hi) == pytest.approx((0.0250, 0.2359), abs=1e-4)
    # the pairing narrows the interval: the same counts unpaired give a wider one that spans 0
    _, ulo, uhi = difference_interval(40, 60, 32, 60)
    assert ulo < 0 < lo and hi < uhi


def test_without_correlation_the_paired_interval_is_the_unpaired_one() -> None:
    # a*d == b*c: phi = 0, so method 10 reduces to Newcombe's interval for two independent samples
    assert paired_difference(PairedTable(4, 4, 4, 4)) == pytest.approx(
        difference_interval(8, 16, 8, 16), abs=1e-4
    )


def test_minimum_detectable_difference_matches_the_issue_sample_sizes() -> None:
    # Connor: n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2; at d = 0.05, psi 0.15 -> 468 and
    # psi 0.25 -> 782 paired questions; unpaired about 1,530 per arm around 0.45
    assert paired_mdd(0.15, 468) == pytest.approx(0.05, abs=5e-4)
    assert paired_mdd(0.25, 782) == pytest.approx(0.05, abs=5e-4)
    assert unpaired_mdd(0.45, 1530) == pytest.approx(0.05, abs=1e-3)
    assert unpaired_mdd(0.45, 120) == pytest.approx(0.18, abs=5e-3)  # the full suite today
    assert paired_mdd(0.0, 500) is None and paired_mdd(0.2, 3) is None
    d = paired_mdd(0.2, 300)
    assert d is not None  # the root solves Connor's equation itself, not only its square
    z_a, z_b = 1.959964, 0.841621
    assert math.sqrt(300) * d == pytest.approx(z_a * math.sqrt(0.2) + z_b * math.sqrt(0.2 - d * d), abs=1e-4)


def test_unpaired_z_test_by_hand() -> None:
    # 55/120 against 40/120: pooled 95/240, se = sqrt(p (1 - p) (2 / 120)) = 0.06312, z = 1.980
    assert unpaired_p(55, 120, 40, 120) == pytest.approx(0.0477, abs=1e-4)
    assert unpaired_p(0, 10, 0, 10) == 1.0
