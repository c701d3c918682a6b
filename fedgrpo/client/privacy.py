"""Differentially private release: the last thing every reward and competence bit passes on its way out.

A client's reward is correctness only (a bit from its answer check or its model's agreement, or a model
score in [0, 1]); whatever the server derives from the candidate text itself is no client's to send.
Each value is privatised in [0, 1]:

* a bit (answer check, agreement, competence bit): randomised response, kept with probability
  ``e^eps / (1 + e^eps)``, flipped otherwise;
* a model score (``clients.evaluation: likelihood``): the Laplace mechanism (scale ``1/eps``,
  sensitivity 1 on [0, 1]) or the Gaussian one for ``(eps, delta_per_value)``, clipped to [0, 1]
  (post-processing, free).

Which mechanism a value gets depends on how it was scored, never on its value (that would leak).

No averaging attack: a released value is cached per (question, normalised final answer) for the whole
run, so asking again, or asking with a differently worded candidate of the same answer, returns the
same value and costs nothing (post-processing). Per question at most ``max_answers_per_question``
distinct answers are released; beyond that, and once the next value would overspend the
``(budget_epsilon, budget_delta)`` budget, the client abstains (None).

Accounting composes the privacy loss distributions (PLD, ``dp-accounting``) of every value released.
The library's ``PLDAccountant`` takes one neighbouring relation for all events and accepts randomised
response only under "replace one" and Laplace only under "add or remove"; for a label that is replaced
the two mean the same thing here (a value in [0, 1], sensitivity 1), so the PLDs are built and composed
directly with the library's own constructors.

``dp_accounting`` (and scipy) load on first use: a client without privacy never imports them.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedgrpo.data import normalise_question
from fedgrpo.method.answers import answer_key, parsed_answer
from fedgrpo.storage.atomic import write_text_atomic

Kind = Literal["rr", "laplace", "gaussian"]
KINDS: tuple[Kind, ...] = ("rr", "laplace", "gaussian")
STATE_FORMAT = 1
_DISCRETISATION = 1e-3  # PLD grid; the library's estimate is pessimistic (an upper bound) on any grid
_GRANT_CAP = 4096  # values granted per allowance search, so one search never composes a huge PLD


@dataclass(frozen=True)
class PrivacyPolicy:
    """What one organisation decided: per-value epsilon, the run's budget, mechanism, query budget.

    ``budget_epsilon=None``: no cap (the spend is still accounted and reported).
    """

    epsilon: float
    budget_epsilon: float | None = 8.0
    budget_delta: float = 1e-5
    continuous: Literal["laplace", "gaussian"] = "laplace"
    delta_per_value: float = 0.0
    max_answers_per_question: int = 8

    def __post_init__(self) -> None:  # the config validates with field names; this guards direct use
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"privacy epsilon must be a positive number, got {self.epsilon!r}")
        if self.budget_epsilon is not None and not self.budget_epsilon > 0:
            raise ValueError(f"privacy budget epsilon must be positive, got {self.budget_epsilon!r}")
        if self.continuous == "gaussian" and not 0 < self.delta_per_value < 1:
            raise ValueError("the gaussian mechanism needs a delta per value in (0, 1)")

    @property
    def keep_probability(self) -> float:
        """Randomised response: the probability a bit is sent as it is."""
        return 1.0 / (1.0 + math.exp(-self.epsilon))

    @functools.cached_property
    def gaussian_sigma(self) -> float:
        from dp_accounting import get_sigma_gaussian

        return float(get_sigma_gaussian(self.epsilon, self.delta_per_value))


def debias_bit(value: float, epsilon: float) -> float:
    """An unbiased estimate of a bit from its randomised response: ``(b - p) / (1 - 2p)``, p the flip rate."""
    p = 1.0 / (1.0 + math.exp(epsilon))
    return (value - p) / (1.0 - 2.0 * p)


class Ledger:
    """How many values of each mechanism a client released, and the (epsilon, delta) that costs."""

    def __init__(self, policy: PrivacyPolicy, counts: dict[str, int] | None = None) -> None:
        self.policy = policy
        self.counts: dict[Kind, int] = {k: int((counts or {}).get(k, 0)) for k in KINDS}
        self._epsilon: dict[tuple[int, ...], float] = {}
        self._grant: tuple[Kind, int] | None = None  # values of one kind known to fit, not yet spent

    def epsilon(self, counts: dict[Kind, int] | None = None) -> float:
        """Epsilon at ``budget_delta`` of releasing ``counts`` values (default: those released)."""
        counts = self.counts if counts is None else counts
        key = tuple(counts[k] for k in KINDS)
        if key not in self._epsilon:
            self._epsilon[key] = self._compose(counts)
        return self._epsilon[key]

    def remember(self, epsilon: float) -> None:
        """The spend of the current counts, as composed before (saves a process importing the library
        and composing again when a message releases nothing new)."""
        self._epsilon[tuple(self.counts[k] for k in KINDS)] = epsilon

    def _compose(self, counts: dict[Kind, int]) -> float:
        if not any(counts.values()):
            return 0.0
        from dp_accounting import NeighboringRelation
        from dp_accounting.pld import privacy_loss_distribution as pld

        p, grid = self.policy, _DISCRETISATION
        single = {
            "rr": lambda: pld.from_randomized_response(
                noise_parameter=2.0 / (1.0 + math.exp(p.epsilon)),
                num_buckets=2,
                value_discretization_interval=grid,
                neighboring_relation=NeighboringRelation.REPLACE_ONE,
            ),
            "laplace": lambda: pld.from_laplace_mechanism(
                parameter=1.0 / p.epsilon, sensitivity=1.0, value_discretization_interval=grid
            ),
            "gaussian": lambda: pld.from_gaussian_mechanism(
                standard_deviation=p.gaussian_sigma, sensitivity=1.0, value_discretization_interval=grid
            ),
        }
        total = None
        for kind, n in counts.items():
            if n:
                part = single[kind]().self_compose(n)
                total = part if total is None else total.compose(part)
        assert total is not None
        return float(total.get_epsilon_for_delta(self.policy.budget_delta))

    def _fits(self, kind: Kind, extra: int) -> bool:
        budget = self.policy.budget_epsilon
        assert budget is not None
        counts = dict(self.counts)
        counts[kind] += extra
        if counts["gaussian"] == 0 and (counts["rr"] + counts["laplace"]) * self.policy.epsilon <= budget:
            return True  # basic composition of pure-DP values already fits: no PLD needed
        return self.epsilon(counts) <= budget

    def reserve(self, kind: Kind) -> bool:
        """Count one more value of ``kind`` if the budget still holds after it; False: abstain."""
        if self.policy.budget_epsilon is not None:
            if self._grant is None or self._grant[0] != kind or self._grant[1] < 1:
                self._grant = (kind, self._allowance(kind))
            if self._grant[1] < 1:
                return False
            self._grant = (kind, self._grant[1] - 1)
        self.counts[kind] += 1
        return True

    def _allowance(self, kind: Kind) -> int:
        """The most further values of ``kind`` that fit (up to a cap): doubling, then bisection."""
        if not self._fits(kind, 1):
            return 0
        good = 1
        while good < _GRANT_CAP and self._fits(kind, min(2 * good, _GRANT_CAP)):
            good = min(2 * good, _GRANT_CAP)
        bad = min(2 * good, _GRANT_CAP + 1)
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if self._fits(kind, mid) else (good, mid)
        return good


@dataclass
class ReleaseStats:
    """What the release layer did in this process (for logs and tests; never sent per item)."""

    released: int = 0
    cached: int = 0
    over_query_budget: int = 0
    over_privacy_budget: int = 0
    per_mechanism: dict[str, int] = field(default_factory=dict)


class PrivateRelease:
    """The client's release layer: noise, the run-long cache, the query budget and the ledger.

    ``model_scores``: whether the client's model gives bits (``agreement``) or scores in [0, 1]
    (``likelihood``). ``state_path``: where the cache and ledger persist between processes (a Flower
    ClientApp may be a new process per message), keyed by ``run``; None keeps them in memory.
    ``seed``: a seeded generator for simulations; None draws from the operating system.
    ``remember=False`` turns the cache off: only to measure the averaging attack it prevents.
    """

    def __init__(
        self,
        policy: PrivacyPolicy,
        model_scores: Literal["binary", "continuous"] = "binary",
        seed: int | None = None,
        state_path: str | Path | None = None,
        run: str = "run",
        remember: bool = True,
    ) -> None:
        self.policy = policy
        self.model_scores = model_scores
        self.rng = np.random.default_rng(seed)
        self.state_path = Path(state_path).expanduser() if state_path else None
        self.run = run
        self.remember = remember
        self.stats = ReleaseStats()
        self.ledger = Ledger(policy)
        self._cache: dict[str, dict[str, float]] = {}  # normalised question -> answer key -> released

    # -- persistence ------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[None]:
        """Load the state, hold its lock while a request is answered, save it (no-op in memory)."""
        if self.state_path is None:
            yield
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.state_path.with_name(self.state_path.name + ".lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # overlapping messages take turns
            try:
                self._load()
                yield
                self._save()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load(self) -> None:
        state: dict[str, Any] = {}
        if self.state_path is not None and self.state_path.exists():
            state = json.loads(self.state_path.read_text())
        if state.get("format") != STATE_FORMAT or state.get("run") != self.run:
            state = {}  # another run (or none yet): start fresh
        self.ledger = Ledger(self.policy, state.get("counts"))
        if "epsilon" in state:  # the spend of these counts, composed by an earlier process
            self.ledger.remember(float(state["epsilon"]))
        self._cache = {q: dict(a) for q, a in state.get("cache", {}).items()}

    def _save(self) -> None:
        assert self.state_path is not None
        state = {
            "format": STATE_FORMAT,
            "run": self.run,
            "counts": self.ledger.counts,
            "epsilon": self.ledger.epsilon(),
            "cache": self._cache,
        }
        write_text_atomic(self.state_path, json.dumps(state), private=True)

    # -- what leaves ------------------------------------------------------------------------------
    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far in this run, over every value released."""
        return self.ledger.epsilon(), self.policy.budget_delta

    def rewards(
        self, question: str, candidates: list[str], rewards: list[float | None], method: str
    ) -> list[float | None]:
        """The rewards to send for one item: each privatised (or cached, or None when over a budget)."""
        kind: Kind = "rr" if method == "answer" or self.model_scores == "binary" else self.policy.continuous
        out: list[float | None] = []
        for text, reward in zip(candidates, rewards, strict=True):
            if reward is None:
                out.append(None)
                continue
            answer = parsed_answer(text)
            key = "a:" + (answer_key(answer) if answer else "")
            out.append(self._release(question, key, min(max(reward, 0.0), 1.0), kind))
        return out

    def bit(self, question: str, bit: int) -> int | None:
        """A competence bit by randomised response (cached per question); None when over the budget."""
        released = self._release(question, "competence", float(bit), "rr", per_question_budget=False)
        return None if released is None else int(released)

    def _release(
        self, question: str, answer: str, value: float, kind: Kind, per_question_budget: bool = True
    ) -> float | None:
        answers = self._cache.setdefault(normalise_question(question), {})
        if answer in answers:
            self.stats.cached += 1
            return answers[answer]
        given = sum(a != "competence" for a in answers)
        if per_question_budget and given >= self.policy.max_answers_per_question:
            self.stats.over_query_budget += 1
            return None
        if not self.ledger.reserve(kind):
            self.stats.over_privacy_budget += 1
            return None
        released = self._noise(value, kind)
        if self.remember:
            answers[answer] = released
        self.stats.released += 1
        self.stats.per_mechanism[kind] = self.stats.per_mechanism.get(kind, 0) + 1
        return released

    def _noise(self, value: float, kind: Kind) -> float:
        if kind == "rr":
            bit = float(round(value))
            return bit if self.rng.random() < self.policy.keep_probability else 1.0 - bit
        if kind == "laplace":
            noisy = value + self.rng.laplace(0.0, 1.0 / self.policy.epsilon)
        else:
            noisy = value + self.rng.normal(0.0, self.policy.gaussian_sigma)
        return float(min(max(noisy, 0.0), 1.0))  # clipping is post-processing: no extra privacy loss
