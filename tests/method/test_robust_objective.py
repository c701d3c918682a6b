"""The robust aggregations (median, trimmed mean) against an independent numpy reference, and the
property they exist for: one expert cannot reorder candidates that the other experts agree on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedgrpo.method.objective import group_advantages
from tests.helpers import EPS

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAN = float("nan")
ROBUST = ["median", "trimmed-mean"]

reward = st.floats(0.0, 1.1, allow_nan=False)
maybe_reward = st.one_of(reward, st.just(NAN))


def reference(rewards: np.ndarray, aggregation: str) -> np.ndarray:
    """Per-expert z (sample std + eps, NaN skipped), then per candidate the median or the mean without
    the single lowest and highest value (three or more present), centred over the scored candidates."""
    z = np.full(rewards.shape, np.nan)
    for k, row in enumerate(rewards):
        present = ~np.isnan(row)
        vals = row[present]
        if vals.size:
            std = float(np.std(vals, ddof=1)) if vals.size > 1 else 0.0
            z[k, present] = (vals - vals.mean()) / (std + EPS)
    combined = np.zeros(rewards.shape[1])
    scored = np.zeros(rewards.shape[1], dtype=bool)
    for i in range(rewards.shape[1]):
        col = np.sort(z[~np.isnan(z[:, i]), i])
        if col.size == 0:
            continue
        scored[i] = True
        if aggregation == "median":
            combined[i] = np.median(col)
        else:
            combined[i] = (col[1:-1] if col.size >= 3 else col).mean()
    if scored.any():
        combined[scored] -= combined[scored].mean()
    return combined


def z_scores(row: list[float]) -> np.ndarray:
    vals = np.array(row)
    return (vals - vals.mean()) / (float(np.std(vals, ddof=1)) + EPS)


@pytest.mark.parametrize("aggregation", ROBUST)
def test_matches_reference_by_hand(aggregation: str) -> None:
    matrix = np.array(
        [
            [1.0, 0.0, 1.0, 0.0, 0.1],
            [1.1, NAN, 0.1, 0.1, 0.1],
            [0.0, 1.0, NAN, 0.5, NAN],
            [1.1, 1.1, 0.1, NAN, NAN],
        ]
    )
    got = group_advantages(torch.tensor(matrix), aggregation).numpy()
    assert got == pytest.approx(reference(matrix, aggregation), abs=1e-9)
    assert float(got.sum()) == pytest.approx(0.0, abs=1e-9)


def test_trimming_drops_exactly_one_value_per_end() -> None:
    # One expert per row with 0/1 rewards: z = +-0.866 (n=4, sample std 0.577) for every expert.
    matrix = torch.tensor([[1.0, 0.0, 0.0, 1.0]] * 4 + [[0.0, 1.0, 1.0, 0.0]])
    zhi = float(z_scores([1.0, 0.0, 0.0, 1.0])[0])
    # candidate 0: four experts at +zhi, one at -zhi: trimmed keeps three of +zhi; median +zhi; mean 0.6 zhi
    assert float(group_advantages(matrix, "trimmed-mean")[0]) == pytest.approx(zhi, abs=1e-9)
    assert float(group_advantages(matrix, "median")[0]) == pytest.approx(zhi, abs=1e-9)
    assert float(group_advantages(matrix, "mean")[0]) == pytest.approx(0.6 * zhi, abs=1e-9)


def test_even_count_median_is_the_mean_of_the_middle_two() -> None:
    matrix = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [NAN, NAN]])
    # two experts say +z for candidate 0, one says -z: median +z; with a fourth row missing nothing changes
    two_of_three = group_advantages(matrix[:3], "median")
    assert group_advantages(matrix, "median").tolist() == pytest.approx(two_of_three.tolist())
    even = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # one each way: the middle two average to 0
    assert group_advantages(even, "median").tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda m: st.integers(1, 8).flatmap(
            lambda g: st.lists(st.lists(maybe_reward, min_size=g, max_size=g), min_size=m, max_size=m)
        )
    ),
    st.sampled_from(ROBUST),
)
def test_matches_reference_on_any_matrix(rows: list[list[float]], aggregation: str) -> None:
    matrix = np.array(rows, dtype=np.float64)
    got = group_advantages(torch.tensor(matrix), aggregation).numpy()
    assert got == pytest.approx(reference(matrix, aggregation), abs=1e-7, rel=1e-7)


honest_pair = st.integers(2, 8).flatmap(
    lambda g: st.tuples(
        st.lists(reward, min_size=g, max_size=g),
        st.lists(reward, min_size=g, max_size=g),
        st.lists(maybe_reward, min_size=g, max_size=g),
    )
)


@settings(max_examples=300, deadline=None)
@given(honest_pair, st.sampled_from(ROBUST))
def test_one_liar_cannot_reorder_what_two_experts_agree_on(
    rows: tuple[list[float], list[float], list[float]], aggregation: str
) -> None:
    """Wherever both honest experts put candidate i strictly above candidate j (every z of i above
    every z of j), the liar's row, whatever it holds, leaves i's advantage above j's."""
    a, b, liar = rows
    adv = group_advantages(torch.tensor([a, b, liar]), aggregation).tolist()
    za, zb = z_scores(a), z_scores(b)
    for i in range(len(a)):
        for j in range(len(a)):
            if min(za[i], zb[i]) > max(za[j], zb[j]) + 1e-9:  # a margin above float rounding
                assert adv[i] > adv[j]


@settings(max_examples=300, deadline=None)
@given(honest_pair, st.sampled_from(ROBUST))
def test_one_liar_cannot_flip_a_sign_the_others_agree_on(
    rows: tuple[list[float], list[float], list[float]], aggregation: str
) -> None:
    """Two experts giving the same rewards fix every advantage: the liar changes nothing at all."""
    honest, _, liar = rows
    adv = group_advantages(torch.tensor([honest, honest, liar]), aggregation)
    alone = group_advantages(torch.tensor([honest]), "mean")
    assert adv.tolist() == pytest.approx(alone.tolist(), abs=1e-9)
    assert all(math.copysign(1, x) == math.copysign(1, y) for x, y in zip(adv, alone, strict=True) if y)


def test_under_the_mean_one_liar_does_flip_a_sign() -> None:
    """What the robust rules prevent: two honest experts call candidate 0 right (z +0.5 each), the liar
    gives it the lowest z its row allows (-1.5): the mean turns its advantage negative."""
    honest, liar = [1.1, 1.1, 1.1, 0.1], [0.1, 1.1, 1.1, 1.1]
    matrix = torch.tensor([honest, honest, liar])
    assert float(group_advantages(matrix, "mean")[0]) < 0
    for aggregation in ROBUST:
        assert float(group_advantages(matrix, aggregation)[0]) > 0
