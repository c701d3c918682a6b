"""The honesty statistic separates liars from weak honest experts the way docs/trust.md says."""

from __future__ import annotations

import random

import pytest

from fedgrpo.server.reputation import Reputation, Tally

G = 8


def question(rng: random.Random) -> list[bool]:
    """One canary's candidates: 1 to 7 right, the others wrong (four distinct wrong answers)."""
    right = rng.randint(1, G - 1)
    return [True] * right + [False] * (G - right)


def verdicts(kind: str, truth: list[bool], rng: random.Random, accuracy: float = 0.3) -> list[bool]:
    wrong_answer = [rng.randrange(4) for _ in truth]  # which wrong answer each wrong candidate holds
    if kind == "honest":  # right with its accuracy, else one wrong answer (a policy's, 1 time in 4)
        own = "right" if rng.random() < accuracy else rng.randrange(16)
        return [t if own == "right" else (not t and wrong_answer[i] == own) for i, t in enumerate(truth)]
    if kind == "flip":
        return [not v for v in verdicts("honest", truth, rng, accuracy)]
    if kind == "always-high":
        return [True] * len(truth)
    if kind == "random":
        return [rng.random() < 0.5 for _ in truth]
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "questions", "excluded"),
    [
        ("honest", 400, False),
        ("flip", 15, True),
        ("always-high", 40, True),
        ("random", 300, True),
    ],
)
def test_liars_are_excluded_and_a_weak_honest_expert_is_not(
    kind: str, questions: int, excluded: bool
) -> None:
    reputation = Reputation(threshold=0.05, confidence=0.95, min_questions=10)
    rng = random.Random(kind)
    for round_ in range(questions):
        truth = question(rng)
        reputation.observe("c", truth, verdicts(kind, truth, rng, accuracy=0.2))
        reputation.update(round_)
    assert ("c" in reputation.excluded()) is excluded
    j, low, high = reputation.tallies["c"].honesty(1.645)
    assert low <= j <= high


def test_a_verdict_needs_min_questions_and_one_sided_canaries_do_not_count() -> None:
    reputation = Reputation(threshold=0.5, min_questions=10)
    for _ in range(9):
        reputation.observe("c", [True, False], [False, True])  # j = -1
        reputation.observe("c", [True, True], [False, False])  # all right: no j
    assert reputation.update(1) == [] and reputation.tallies["c"].questions == 9
    assert reputation.tallies["c"].one_sided == 9 and reputation.tallies["c"].candidates == 36
    reputation.observe("c", [True, False], [False, True])
    assert reputation.update(2) == ["c"] and reputation.excluded() == {"c"}
    restored = Reputation(threshold=0.5)
    restored.load_state_dict(reputation.state_dict())
    assert restored.excluded() == {"c"} and restored.report() == reputation.report()
    assert Tally().honesty(1.645) == (0.0, -1.0, 1.0)
