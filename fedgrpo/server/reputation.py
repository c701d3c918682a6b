"""Each client's honesty, measured on the server's hidden spot checks (canaries), with an interval.

A canary is a question only the server can label, so every client scores it with its model (no
client holds it). Per canary question with right and wrong candidates (a released correctness >= 0.5
counts as "says right"; the truth is the server's own answer check on the candidate):

    j = share of right candidates it calls right - share of wrong candidates it calls right

(Youden's J, "informedness"), and a client's honesty is the mean of j over its canary questions.
Within a question, because GRPO's advantages are: only a client's ordering of one question's
candidates reaches the loss. Rates pooled over questions would credit a colluder that picks one of
the candidates' answers uniformly (0 within every question) with the policy's own majority (the right
answer covers more candidates when picked): +0.23 to +0.26 in ``bench/canaries.py``. An honest
expert's honesty is its accuracy ``a`` less how often its mistakes are the policy's; a random,
always-high or colluding client is at about 0, a flipping one at minus its honest self's.

*Consistency, not level* (``margin``): a weak honest expert is low here and also low on the
competence queries; a liar answers those honestly (they carry the server's answers, so they are
recognisable) and is low only here. With each client's accuracy on the competence queries
(``expected``), a client is excluded once its honesty's upper bound is below that accuracy less
``margin``; without it (no confidence graph, or no margin), below the absolute ``threshold``. And
a second test of the same kind that also uses the canaries with no right candidate (most of them
with a weak policy): an honest expert calls a wrong candidate right only when its own answer is
wrong, so on at most ``1 - accuracy`` of its canaries; a client confidently above ``1 - accuracy +
margin`` (Wilson's lower bound) is excluded. Always-high, flipping, colluding and random clients call
some wrong candidate right on nearly every canary.

*One answer per question* (``answers`` given: clients that score by agreement, without privacy
noise): an expert that scores by agreement with its own answer calls right exactly the candidates
whose final answer is its own, so never two candidates with different final answers, however weak it
is. A client that does so on ``SPLITS_TO_EXCLUDE`` canaries is excluded: always-high, random and
flipping clients do it on most canaries with two wrong answers among the candidates. (Two, not one:
a deployed client whose answer normalisation differs from the server's could split one by accident.)
A liar that endorses one answer per question, as colluders do, passes this test; the two above
remain for it.

The interval is the mean's normal approximation from the spread of j over questions, plus one
pseudo-question of variance ``PRIOR_VARIANCE`` (so that a few identical j's do not look certain),
one-sided at ``confidence``. Counts are per client, updated after every round, saved in the
checkpoint and in ``reputation.json``. Randomised response at epsilon per bit shrinks every j by
``tanh(epsilon / 2)`` (``docs/trust.md``); the server does not debias.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

log = logging.getLogger(__name__)

PRIOR_VARIANCE = 1.0  # one pseudo-question of the largest spread a question can have
SPLITS_TO_EXCLUDE = 2  # canaries on which a client called two different answers right


@dataclass
class Tally:
    """One client's canary questions: how many, the sum and sum of squares of their j, the candidates
    scored, and the round it was excluded in (None: still trusted)."""

    questions: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    candidates: int = 0
    one_sided: int = 0  # canaries whose candidates were all right or all wrong: no j
    wrong_questions: int = 0  # canaries with a wrong candidate scored
    endorsed: int = 0  # of those, where it called a wrong candidate right
    split: int = 0  # canaries where it called right candidates with different final answers
    excluded_at: int | None = None

    def add(
        self, truth: Sequence[bool], says_right: Sequence[bool], answers: Sequence[str] | None = None
    ) -> None:
        self.candidates += len(truth)
        if answers is not None:
            self.split += len({a for a, s in zip(answers, says_right, strict=True) if s}) > 1
        right = [s for t, s in zip(truth, says_right, strict=True) if t]
        wrong = [s for t, s in zip(truth, says_right, strict=True) if not t]
        if wrong:
            self.wrong_questions += 1
            self.endorsed += any(wrong)
        if not right or not wrong:
            self.one_sided += 1
            return
        j = sum(right) / len(right) - sum(wrong) / len(wrong)
        self.questions += 1
        self.total += j
        self.total_sq += j * j

    def honesty(self, z: float) -> tuple[float, float, float]:
        """(mean j, lower, upper); (0, -1, 1) before any question."""
        n = self.questions
        if not n:
            return 0.0, -1.0, 1.0
        mean = self.total / n
        spread = max(self.total_sq - n * mean * mean, 0.0) + PRIOR_VARIANCE
        half = z * math.sqrt(spread / n / n)  # variance (spread / n) of one j, over n questions
        return mean, max(mean - half, -1.0), min(mean + half, 1.0)

    def endorsement(self, z: float) -> tuple[float, float]:
        """(share of its canaries with a wrong candidate where it called one right, Wilson lower bound)."""
        n = self.wrong_questions
        if not n:
            return 0.0, 0.0
        p = self.endorsed / n
        centre = p + z * z / (2 * n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return p, max((centre - half) / (1 + z * z / n), 0.0)


class Reputation:
    """Per-client honesty from canary answers; a client whose upper bound falls below its limit is
    excluded for the rest of the run (never routed to again, its rewards left out)."""

    def __init__(
        self,
        threshold: float,
        confidence: float = 0.95,
        min_questions: int = 10,
        margin: float | None = None,
        expected: Mapping[str, float] | None = None,
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        if margin is not None and not 0.0 <= margin <= 2.0:
            raise ValueError(f"margin must be in [0, 2], got {margin}")
        self.threshold = threshold
        self.confidence = confidence
        self.min_questions = min_questions  # no verdict on fewer canary questions (normal approximation)
        self.margin = margin
        self.expected = dict(expected or {})  # each client's accuracy on the competence queries
        self._z = NormalDist().inv_cdf(confidence)
        self.tallies: dict[str, Tally] = {}

    def limit(self, client: str) -> float:
        """The honesty a client must be confidently below to be excluded: its competence-query accuracy
        less ``margin`` (consistency), or ``threshold`` without a margin or an accuracy for it."""
        if self.margin is None or client not in self.expected:
            return self.threshold
        return self.expected[client] - self.margin

    def endorsement_limit(self, client: str) -> float | None:
        """The endorsement rate a client must be confidently above to be excluded: an honest expert calls
        a wrong candidate right only when its own answer is wrong, so at most ``1 - accuracy`` of the
        time; with ``margin`` for the accuracy's own error. None without a margin or an accuracy."""
        if self.margin is None or client not in self.expected:
            return None
        return 1.0 - self.expected[client] + self.margin

    def observe(
        self,
        client: str,
        truth: Sequence[bool],
        says_right: Sequence[bool],
        answers: Sequence[str] | None = None,
    ) -> None:
        """One canary question's candidates that ``client`` scored: the truth, its verdicts and, for the
        one-answer test, each candidate's final answer (normalised; None: no such test for it)."""
        self.tallies.setdefault(client, Tally()).add(truth, says_right, answers)

    def excluded(self) -> set[str]:
        return {c for c, t in self.tallies.items() if t.excluded_at is not None}

    def update(self, round_: int) -> list[str]:
        """Exclude every client that called different answers right on ``SPLITS_TO_EXCLUDE`` canaries,
        or is now confidently below its honesty limit or above its endorsement limit (each of those on
        at least ``min_questions`` canaries); returns the newly excluded."""
        newly = []
        for client, tally in sorted(self.tallies.items()):
            if tally.excluded_at is not None:
                continue
            j, low, high = tally.honesty(self._z)
            rate, rate_low = tally.endorsement(self._z)
            cap = self.endorsement_limit(client)
            if tally.split >= SPLITS_TO_EXCLUDE:
                why = f"called different answers right on {tally.split} canaries (one answer per question)"
            elif tally.questions >= self.min_questions and high < self.limit(client):
                why = f"honesty {j:.3f}, upper bound {high:.3f} below its limit {self.limit(client):.3f}"
            elif tally.wrong_questions >= self.min_questions and cap is not None and rate_low > cap:
                why = (
                    f"calls a wrong candidate right on {rate:.3f}, lower bound {rate_low:.3f} above {cap:.3f}"
                )
            else:
                continue
            tally.excluded_at = round_
            newly.append(client)
            log.warning(
                "%s excluded in round %d (%.0f%% one-sided): %s, after %d canary questions (%d with a right "
                "and a wrong candidate)",
                client,
                round_,
                100 * self.confidence,
                why,
                tally.questions + tally.one_sided,
                tally.questions,
            )
        return newly

    def report(self) -> dict[str, Any]:
        """What an operator reads (``reputation.json``, ``results.json``): per client the counts, the
        honesty with its interval, its limit and whether (and when) it was excluded."""
        clients = {}
        for client, tally in sorted(self.tallies.items()):
            j, low, high = tally.honesty(self._z)
            clients[client] = {
                **asdict(tally),
                "honesty": round(j, 4),
                "interval": [round(low, 4), round(high, 4)],
                "expected": self.expected.get(client),
                "limit": round(self.limit(client), 4),
                "endorsement": [round(x, 4) for x in tally.endorsement(self._z)],
                "endorsement_limit": self.endorsement_limit(client),
            }
        return {
            "threshold": self.threshold,
            "margin": self.margin,
            "confidence": self.confidence,
            "clients": clients,
        }

    def state_dict(self) -> dict[str, Any]:
        return {c: asdict(t) for c, t in self.tallies.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tallies = {c: Tally(**t) for c, t in state.items()}
