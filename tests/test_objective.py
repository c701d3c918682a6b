"""The federated group-relative advantage, by hand and as TRL ends up using it."""

from __future__ import annotations

import math

import pytest
import torch

from fedgrpo.objective import EPS, group_advantages, zero_spread

NAN = float("nan")


def sample_std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def hand_mean_aggregation() -> list[float]:
    """Expert A scores all four candidates, expert B misses candidate 1, expert C misses everything."""
    a = [1.0, 0.0, 1.0, 0.0]
    b = [1.1, 0.1, 0.1]  # candidates 0, 2, 3
    za = [(r - 0.5) / (sample_std(a) + EPS) for r in a]
    mb = sum(b) / 3
    zb = {i: (r - mb) / (sample_std(b) + EPS) for i, r in zip([0, 2, 3], b, strict=True)}
    combined = [(za[0] + zb[0]) / 2, za[1], (za[2] + zb[2]) / 2, (za[3] + zb[3]) / 2]
    centre = sum(combined) / 4
    return [c - centre for c in combined]


MATRIX = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.1, NAN, 0.1, 0.1], [NAN, NAN, NAN, NAN]])


def test_mean_aggregation_matches_hand_calculation() -> None:
    got = group_advantages(MATRIX, "mean")
    assert got.tolist() == pytest.approx(hand_mean_aggregation(), abs=1e-6)
    # the missing expert is left out, not counted as zeros: dropping its row changes nothing
    assert group_advantages(MATRIX[:2], "mean").tolist() == pytest.approx(got.tolist(), abs=1e-9)
    assert float(got.sum()) == pytest.approx(0.0, abs=1e-9)


def test_missing_is_not_zero() -> None:
    with_zero = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.1, 0.0, 0.1, 0.1]])
    assert group_advantages(with_zero).tolist() != pytest.approx(group_advantages(MATRIX).tolist(), abs=1e-3)


def test_pooled_aggregation_matches_hand_calculation() -> None:
    pool = [1.0, 0.0, 1.0, 0.0, 1.1, 0.1, 0.1]
    m, s = sum(pool) / len(pool), sample_std(pool)
    z = lambda r: (r - m) / (s + EPS)  # noqa: E731
    combined = [(z(1.0) + z(1.1)) / 2, z(0.0), (z(1.0) + z(0.1)) / 2, (z(0.0) + z(0.1)) / 2]
    centre = sum(combined) / 4
    got = group_advantages(MATRIX, "pooled")
    assert got.tolist() == pytest.approx([c - centre for c in combined], abs=1e-6)


def test_unscored_candidates_get_zero_and_others_are_centred() -> None:
    m = torch.tensor([[1.0, NAN, 0.0, NAN]])
    got = group_advantages(m)
    assert got[1] == 0 and got[3] == 0
    assert got[0] > 0 > got[2]
    assert float(got[0] + got[2]) == pytest.approx(0.0)
    assert group_advantages(torch.full((2, 4), NAN)).tolist() == [0.0] * 4


def test_zero_spread() -> None:
    assert zero_spread(torch.tensor([[1.0, 1.0, 1.0], [NAN, 0.0, 0.0]]))
    assert not zero_spread(torch.tensor([[1.0, 1.0, 1.0], [NAN, 0.0, 1.0]]))
