"""Each client's honesty, measured on the server's hidden spot checks (canaries), with an interval.

A canary is a question only the server can label, so every client scores it with its model (no
client holds it). A client's verdict on a candidate is "right" when its released correctness is >=
0.5; the truth is the server's own answer check. Over *all* its canary candidates (pooled, so a
canary whose candidates are all wrong, most of them with a weak policy, counts too):

    honesty = share of right candidates it calls right - share of wrong candidates it calls right

(Youden's J, "informedness"). Any verdict that does not depend on the truth (always high, random,
a colluder's pick made without knowing it) has honesty 0 whatever the mix of canaries; a flipping
client has minus its honest model's. An honest expert that answers the question itself and agrees
with the candidates that share its answer has its accuracy ``a`` less how often its mistakes are the
policy's (``(1 - a) c``): above 0 unless its mistakes are mostly the policy's own.

*Consistency, not level* (``margin``): a weak honest expert is low here and also low on the
competence queries; a liar answers those honestly (they carry the server's answers, so they are
recognisable) and is low only here. With each client's accuracy on the competence queries
(``expected``), a client is excluded once its honesty's upper bound is below that accuracy less
``margin``; without it (no confidence graph), below the absolute ``threshold``.

The interval: questions are the independent unit (a model's verdicts on one question's candidates
stand or fall together), so the variance of the two pooled ratios is the cluster (sandwich)
estimate over questions, plus one pseudo-question of variance ``PRIOR_VARIANCE`` so that a few
identical questions do not look certain; one-sided at ``confidence``. Counts per question are kept
per client, saved in the checkpoint and summarised in ``reputation.json``. Randomised response at
epsilon per bit shrinks honesty by ``tanh(epsilon / 2)`` (``docs/trust.md``); the server does not
debias.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

log = logging.getLogger(__name__)

PRIOR_VARIANCE = 1.0  # one pseudo-question of the largest spread a question can have


@dataclass
class Tally:
    """One client's canary questions, each as (right called right, right, wrong called right, wrong),
    and the round it was excluded in (None: still trusted)."""

    counts: list[list[int]] = field(default_factory=list)
    excluded_at: int | None = None

    def add(self, truth: Sequence[bool], says_right: Sequence[bool]) -> None:
        if not truth:
            return
        pairs = list(zip(truth, says_right, strict=True))
        right = sum(t for t, _ in pairs)
        self.counts.append(
            [sum(t and s for t, s in pairs), right, sum(s and not t for t, s in pairs), len(pairs) - right]
        )

    @property
    def questions(self) -> int:
        return len(self.counts)

    def honesty(self, z: float) -> tuple[float, float, float]:
        """(honesty, lower, upper); (0, -1, 1) until it has scored both a right and a wrong candidate."""
        n_right = sum(c[1] for c in self.counts)
        n_wrong = sum(c[3] for c in self.counts)
        if not n_right or not n_wrong:
            return 0.0, -1.0, 1.0
        tpr = sum(c[0] for c in self.counts) / n_right
        fpr = sum(c[2] for c in self.counts) / n_wrong
        j = tpr - fpr
        q = len(self.counts)
        spread = sum(((r - tpr * n) / n_right - (w - fpr * m) / n_wrong) ** 2 for r, n, w, m in self.counts)
        variance = spread * q / max(q - 1, 1) + PRIOR_VARIANCE / q / q
        half = z * math.sqrt(variance)
        return j, max(j - half, -1.0), min(j + half, 1.0)


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

    def observe(self, client: str, truth: Sequence[bool], says_right: Sequence[bool]) -> None:
        """One canary question's candidates that ``client`` scored: the truth and its verdicts."""
        self.tallies.setdefault(client, Tally()).add(truth, says_right)

    def excluded(self) -> set[str]:
        return {c for c, t in self.tallies.items() if t.excluded_at is not None}

    def update(self, round_: int) -> list[str]:
        """Exclude every client now confidently below its limit; returns the newly excluded."""
        newly = []
        for client, tally in sorted(self.tallies.items()):
            if tally.excluded_at is not None or tally.questions < self.min_questions:
                continue
            j, low, high = tally.honesty(self._z)
            if high < self.limit(client):
                tally.excluded_at = round_
                newly.append(client)
                log.warning(
                    "%s excluded in round %d: honesty %.3f, %.0f%% interval [%.3f, %.3f] below its limit "
                    "%.3f after %d canary questions",
                    client,
                    round_,
                    j,
                    100 * self.confidence,
                    low,
                    high,
                    self.limit(client),
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
                "questions": tally.questions,
                "right": sum(c[1] for c in tally.counts),
                "right_called_right": sum(c[0] for c in tally.counts),
                "wrong": sum(c[3] for c in tally.counts),
                "wrong_called_right": sum(c[2] for c in tally.counts),
                "honesty": round(j, 4),
                "interval": [round(low, 4), round(high, 4)],
                "expected": self.expected.get(client),
                "limit": round(self.limit(client), 4),
                "excluded_at": tally.excluded_at,
            }
        return {
            "threshold": self.threshold,
            "margin": self.margin,
            "confidence": self.confidence,
            "clients": clients,
        }

    def state_dict(self) -> dict[str, Any]:
        return {c: {"counts": t.counts, "excluded_at": t.excluded_at} for c, t in self.tallies.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tallies = {c: Tally([list(x) for x in t["counts"]], t["excluded_at"]) for c, t in state.items()}
