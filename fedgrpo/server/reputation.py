"""Each client's honesty, measured on the server's hidden spot checks (canaries), with an interval.

A canary is a question only the server can label, so every client scores it with its model (no
client holds it). Its rewards say nothing about how *often* a client is right, which depends on its
competence, but they do say whether its verdicts carry information about the truth. Per canary
question with right and wrong candidates (a released correctness >= 0.5 counts as "says right"; the
truth is the server's own answer check on the candidate):

    j = share of right candidates it calls right - share of wrong candidates it calls right

(Youden's J, "informedness") and a client's honesty is the mean of j over its canary questions. An
honest expert answers the question itself and agrees with the candidates that match its answer: j is
1 where its own answer is right and minus the share of wrong candidates that share its wrong answer
otherwise, so its honesty is its accuracy a less how often its mistakes are the policy's (b): above
0 however weak it is, unless its mistakes are mostly the policy's own. Liars are not: a random
client is at 0, an always-high one at exactly 0 on every question, a colluder that promotes an answer
picked without knowing the truth at about 0, a flipping one at minus an honest expert's honesty.

Per question, not per candidate: a model's verdicts on one question's G candidates stand or fall
together (its one answer is right or wrong), so the question is the independent unit. The interval
is the mean's normal approximation from the spread of j over questions, with one pseudo-question
of variance 1 (so a few identical j's do not look certain), one-sided at ``confidence``. Excluding a
client needs its *upper* bound below ``threshold``: weak-but-honest experts are excluded only once
confidently below it, so pick it below the weakest honest expert's honesty (``bench/canaries.py``
measures both sides). Counts are per client, updated after every round, saved in the checkpoint and
in ``reputation.json``. Randomised response at epsilon per bit shrinks every j by
``tanh(epsilon / 2)`` (``docs/trust.md``); the server does not debias.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

log = logging.getLogger(__name__)

PRIOR_VARIANCE = 0.25  # one pseudo-question of about a random client's spread of j


@dataclass
class Tally:
    """One client's canary questions: how many, the sum and sum of squares of their j, the candidates
    scored, and the round it was excluded in (None: still trusted)."""

    questions: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    candidates: int = 0
    one_sided: int = 0  # canaries whose candidates were all right or all wrong: no j
    excluded_at: int | None = None

    def add(self, truth: Sequence[bool], says_right: Sequence[bool]) -> None:
        self.candidates += len(truth)
        right = [s for t, s in zip(truth, says_right, strict=True) if t]
        wrong = [s for t, s in zip(truth, says_right, strict=True) if not t]
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


class Reputation:
    """Per-client honesty from canary answers; a client whose upper bound falls below ``threshold``
    is excluded for the rest of the run (never routed to again, its rewards left out)."""

    def __init__(self, threshold: float, confidence: float = 0.95, min_questions: int = 10) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        self.threshold = threshold
        self.confidence = confidence
        self.min_questions = min_questions  # no verdict on fewer canary questions (normal approximation)
        self._z = NormalDist().inv_cdf(confidence)
        self.tallies: dict[str, Tally] = {}

    def observe(self, client: str, truth: Sequence[bool], says_right: Sequence[bool]) -> None:
        """One canary question's candidates that ``client`` scored: the truth and its verdicts."""
        self.tallies.setdefault(client, Tally()).add(truth, says_right)

    def excluded(self) -> set[str]:
        return {c for c, t in self.tallies.items() if t.excluded_at is not None}

    def update(self, round_: int) -> list[str]:
        """Exclude every client now confidently below the threshold; returns the newly excluded."""
        newly = []
        for client, tally in sorted(self.tallies.items()):
            if tally.excluded_at is not None or tally.questions < self.min_questions:
                continue
            j, low, high = tally.honesty(self._z)
            if high < self.threshold:
                tally.excluded_at = round_
                newly.append(client)
                log.warning(
                    "%s excluded in round %d: honesty %.3f, %.0f%% interval [%.3f, %.3f] below the "
                    "threshold %.3f after %d canary questions (%d candidates)",
                    client,
                    round_,
                    j,
                    100 * self.confidence,
                    low,
                    high,
                    self.threshold,
                    tally.questions,
                    tally.candidates,
                )
        return newly

    def report(self) -> dict[str, Any]:
        """What an operator reads (``reputation.json``, ``results.json``): per client the counts, the
        honesty with its interval and whether (and when) it was excluded."""
        clients = {}
        for client, tally in sorted(self.tallies.items()):
            j, low, high = tally.honesty(self._z)
            clients[client] = {
                **asdict(tally),
                "honesty": round(j, 4),
                "interval": [round(low, 4), round(high, 4)],
            }
        return {"threshold": self.threshold, "confidence": self.confidence, "clients": clients}

    def state_dict(self) -> dict[str, Any]:
        return {c: asdict(t) for c, t in self.tallies.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tallies = {c: Tally(**t) for c, t in state.items()}
