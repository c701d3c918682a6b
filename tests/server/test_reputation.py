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
        ("always-high", 60, True),
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


def test_one_sided_canaries_do_not_count_and_a_uniform_colluder_is_at_zero() -> None:
    """A canary with only wrong (or only right) candidates orders nothing, so it says nothing about
    honesty. A colluder that promotes one of the answers, picked without the truth, is at 0 within
    every question however many candidates each answer covers (pooled rates would credit it with the
    policy's majority: the right answer, 3 of 4 candidates, is picked half the time)."""
    tally = Tally()
    tally.add([False] * 4, [True] * 4)
    assert tally.questions == 0 and tally.one_sided == 1 and tally.candidates == 4
    for pick_right in (True, False) * 10:
        tally.add([True, True, True, False], [pick_right] * 3 + [not pick_right])
    j, low, high = tally.honesty(1.645)
    assert tally.questions == 20 and j == 0.0 and low < 0 < high
    assert Tally().honesty(1.645) == (0.0, -1.0, 1.0)


def test_consistency_holds_each_client_to_its_own_competence() -> None:
    """With ``margin``, a weak honest client (low on the competence queries, low on canaries) stays and
    an uninformed one that was strong on the competence queries is excluded; without a competence
    for a client, the absolute threshold applies."""
    reputation = Reputation(0.05, min_questions=10, margin=0.15, expected={"weak": 0.05, "liar": 0.5})
    assert reputation.limit("weak") == pytest.approx(-0.1) and reputation.limit("other") == 0.05
    for round_ in range(40):
        truth = [True, False, False, False]
        reputation.observe("weak", truth, [False, False, False, False])  # wrong, its own mistake
        reputation.observe("liar", truth, [True, True, True, True])  # always high: honesty 0
        reputation.observe("other", truth, [False, False, False, False])
        reputation.update(round_)
    assert reputation.excluded() == {"liar", "other"}
    report = reputation.report()["clients"]
    assert report["weak"]["honesty"] == 0.0 and report["weak"]["limit"] == -0.1
    assert report["liar"]["excluded_at"] == 9  # its 10th question: min_questions


def test_a_verdict_needs_min_questions_and_is_resumed() -> None:
    reputation = Reputation(threshold=0.5, min_questions=10)
    for _ in range(9):
        reputation.observe("c", [True, False], [False, True])  # honesty -1
    assert reputation.update(1) == [] and reputation.tallies["c"].questions == 9
    reputation.observe("c", [True, False], [False, True])
    assert reputation.update(2) == ["c"] and reputation.excluded() == {"c"}
    restored = Reputation(threshold=0.5)
    restored.load_state_dict(reputation.state_dict())
    assert restored.excluded() == {"c"} and restored.report() == reputation.report()


def test_endorsing_wrong_candidates_more_often_than_its_own_error_rate_excludes() -> None:
    """All-wrong canaries give no honesty, but an honest expert calls a wrong candidate right only
    when it is wrong itself: at most 1 - accuracy of the time. An always-high client that was right
    on 60% of the competence queries calls one right on every canary and is excluded once that is
    confidently above 0.4 + margin; a weak honest client (accuracy 0.1, endorsing on 80%) is not."""
    reputation = Reputation(0.05, min_questions=5, margin=0.15, expected={"liar": 0.6, "weak": 0.1})
    excluded_at = None
    for round_ in range(40):
        reputation.observe("liar", [False] * 4, [True] * 4)
        reputation.observe("weak", [False] * 4, [round_ % 5 != 0, False, False, False])
        if reputation.update(round_):
            excluded_at = round_
    assert reputation.excluded() == {"liar"} and excluded_at is not None and 4 <= excluded_at < 10
    tally = reputation.tallies["liar"]
    assert (
        tally.questions == 0 and tally.excluded_at == excluded_at and tally.wrong_questions == tally.endorsed
    )
    rate, low = tally.endorsement(1.645)
    assert rate == 1.0 and low > 0.55 and reputation.endorsement_limit("liar") == pytest.approx(0.55)
    assert (
        reputation.endorsement_limit("nobody") is None and Reputation(0.05).endorsement_limit("liar") is None
    )


def answered(rng: random.Random) -> list[str]:
    """One canary's candidates by final answer: 1 to 7 right ("r"), the others among four wrong ones."""
    right = rng.randint(1, G - 1)
    return ["r"] * right + [f"w{rng.randrange(4)}" for _ in range(G - right)]


def agreeing(kind: str, answers: list[str], rng: random.Random, accuracy: float) -> list[bool]:
    """Verdicts by agreement with one answer of its own (honest, or a colluder promoting a wrong one
    picked among the candidates'), or a liar's."""
    if kind == "honest":
        own = "r" if rng.random() < accuracy else f"w{rng.randrange(16)}"  # a policy's wrong 1 time in 4
        return [a == own for a in answers]
    if kind == "colluding":
        wrong = sorted({a for a in answers if a != "r"})
        own = rng.choice(wrong) if wrong else "none"
        return [a == own for a in answers]
    honest = agreeing("honest", answers, rng, accuracy)
    if kind == "flip":
        return [not v for v in honest]
    if kind == "always-high":
        return [True] * len(answers)
    return [rng.random() < 0.5 for _ in answers]  # random


@pytest.mark.parametrize(
    ("kind", "within"),
    [("honest", None), ("colluding", None), ("flip", 5), ("always-high", 2), ("random", 5)],
)
def test_one_answer_per_question_tells_a_liar_from_the_weakest_honest_expert(
    kind: str, within: int | None
) -> None:
    """An agreement scorer calls right only its own answer's candidates, however weak: no honest
    expert is ever excluded by the one-answer test, and liars that call several answers right are, in
    a few canaries. A colluder promoting one answer passes it (the other tests are for it)."""
    reputation = Reputation(threshold=-1.0, min_questions=10_000)  # the one-answer test alone
    rng = random.Random(kind)
    for round_ in range(1, 401):
        answers = answered(rng)
        says = agreeing(kind, answers, rng, accuracy=0.02)
        reputation.observe("c", [a == "r" for a in answers], says, answers)
        reputation.update(round_)
    excluded_at = reputation.tallies["c"].excluded_at
    if within is None:
        assert excluded_at is None and reputation.tallies["c"].split == 0
    else:
        assert excluded_at is not None and excluded_at <= within
    reputation.observe("quiet", [True, False], [True, True])  # no answers given (privacy noise): no test
    assert reputation.tallies["quiet"].split == 0
