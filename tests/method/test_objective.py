"""The federated group-relative advantage, by hand and as TRL ends up using it."""

from __future__ import annotations

import pytest
import torch

from fedgrpo.method.objective import EPS, group_advantages, zero_spread
from tests.helpers import EPS as HAND_EPS
from tests.helpers import hand_mean_aggregation, sample_std

NAN = float("nan")


def test_hand_calculation_uses_the_objectives_epsilon() -> None:
    assert HAND_EPS == EPS


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
