"""Differentially private release: the last thing every reward and competence bit passes on its way out.

A client's reward is correctness only (a bit from its answer check or its model's agreement, or a model
score in [0, 1]); whatever the server derives from the candidate text itself is no client's to send.
Each value is privatised in [0, 1]:

* a bit (answer check, agreement, competence bit): randomised response, kept with probability
  ``e^eps / (1 + e^eps)``, flipped otherwise;
* a model score (``clients.evaluation: likelihood``): the Laplace mechanism (scale ``1/eps``,
  sensitivity 1 on [0, 1]) or the Gaussian one for ``(eps, delta_per_value)``, clipped to [0, 1]
  (post-processing, free).

**Hidden membership.** The form of every value (bit or score) is the client's, never the item's:
an answer check of a client whose model gives scores is released as a score too. Nothing is ever
withheld: an item the client cannot judge (it does not hold the question and has no model, or its
model is down), an answer past ``max_answers_per_question`` and an answer check whose example is at
its budget all get *free noise* of the same form, drawn from no data (a fair coin; the mechanism
applied to 0.5 for a score, not a uniform value, whose lack of atoms at 0 and 1 would give it away).
A holder's value and such noise differ by at most a factor ``e^eps`` in probability, so a server
tells a holder from a non-holder no better than epsilon allows (``tests/client/test_hidden_membership.py``).

No averaging attack: a released value is cached per (question, normalised final answer) for as long
as the organisation's state lives (across runs), so asking again, or asking with a differently
worded candidate of the same answer, returns the same value and costs nothing (post-processing).

Accounting is per example (:mod:`fedgrpo.client.privacy_ledger`): an answer check is charged to the
one example whose question it is, model-based values to the expert. The state persists per
organisation, not per run (:mod:`fedgrpo.client.privacy_state`).

``dp_accounting`` (and scipy) load on first use: a client without privacy never imports them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedgrpo.client.privacy_ledger import (
    TRAINING_CACHE,
    Kind,
    Ledger,
    TrainingPrivacyLike,
    charge_key,
    example_id,
)
from fedgrpo.client.privacy_state import locked, now, read_state, write_state
from fedgrpo.data import normalise_question
from fedgrpo.method.answers import answer_key, parsed_answer

__all__ = ["Ledger", "PrivacyPolicy", "PrivateRelease", "ReleaseStats", "debias_bit"]


@dataclass(frozen=True)
class PrivacyPolicy:
    """What one organisation decided: per-value epsilon, each example's budget, mechanism, query budget.

    ``budget_epsilon`` bounds each example's epsilon at ``budget_delta`` over all runs; None: no cap
    (the spend is still accounted and reported).
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


@dataclass
class ReleaseStats:
    """What the release layer did in this process (for logs and tests; never sent per item)."""

    released: int = 0
    cached: int = 0
    noise: int = 0  # free noise sent (cannot judge, past the query budget or an example's budget)
    over_query_budget: int = 0
    over_privacy_budget: int = 0
    per_mechanism: dict[str, int] = field(default_factory=dict)


class PrivateRelease:
    """The client's release layer: noise, the cache, the query budget and the per-example ledger.

    ``model_scores``: whether the client's values are bits (``binary``: answer checks, agreement) or
    scores in [0, 1] (``continuous``: a ``likelihood`` model; its answer checks are released as scores
    too). ``state_path``: the organisation's state file (cache and ledger across processes and runs,
    :mod:`fedgrpo.client.privacy_state`); None keeps them in memory. ``run``: the name this run's spend
    is recorded under (the server's; it resets nothing). ``training``: the expert's DP-SGD privacy,
    composed into every example (None: a non-private expert, model releases uncovered).
    ``seed``: a seeded generator for simulations; None draws from the operating system.
    ``remember=False`` turns the cache off: only to measure the averaging attack it prevents;
    ``hide_membership = False`` (set after construction, ``clients.privacy.hide_membership``) lets the
    client abstain and send real method counts: only to measure what hiding costs.
    """

    hide_membership = True

    def __init__(
        self,
        policy: PrivacyPolicy,
        model_scores: Literal["binary", "continuous"] = "binary",
        seed: int | list[int] | None = None,
        state_path: str | Path | None = None,
        run: str = "run",
        remember: bool = True,
        training: TrainingPrivacyLike | None = None,
        owner: str | None = None,
    ) -> None:
        self.policy = policy
        self.model_scores = model_scores
        self.rng = np.random.default_rng(seed)
        self.state_path = Path(state_path).expanduser() if state_path else None
        self.run = run
        self.remember = remember
        self.training = training
        self.owner = owner
        self.stats = ReleaseStats()
        self.ledger = Ledger(policy.budget_epsilon, policy.budget_delta, training)
        self._cache: dict[str, dict[str, float]] = {}  # normalised question -> answer key -> released
        self._kept: dict[str, Any] = {}  # the state's other fields (owner, resets), saved as they were

    @property
    def form(self) -> Kind:
        """The mechanism of every value this client sends: one per client, never per item."""
        return "rr" if self.model_scores == "binary" else self.policy.continuous

    def _key(self, kind: Kind) -> str:
        return charge_key(kind, self.policy.epsilon, self.policy.delta_per_value)

    # -- persistence ------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[None]:
        """Load the state, hold its lock while a request is answered, save it (no-op in memory)."""
        if self.state_path is None:
            yield
            return
        with locked(self.state_path):  # overlapping messages take turns
            self._load()
            yield
            self._save()

    def _load(self) -> None:
        assert self.state_path is not None
        state = read_state(self.state_path, self._key("rr"))
        self.ledger = Ledger(self.policy.budget_epsilon, self.policy.budget_delta, self.training, state)
        self._cache = {q: dict(a) for q, a in state.get("cache", {}).items()}
        self._kept = {k: state[k] for k in ("owner", "resets") if k in state}

    def _save(self) -> None:
        assert self.state_path is not None
        record = self.ledger.run_record(self.run)
        record["per_release_epsilon"] = self.ledger.run_epsilon(self.run)
        record.setdefault("first_answered", now())
        record["last_answered"] = now()
        state = {
            **self._kept,
            "owner": self._kept.get("owner") or self.owner,
            "policy": {k: getattr(self.policy, k) for k in PrivacyPolicy.__dataclass_fields__},
            "summary": self.report(),
            "runs": self.ledger.runs,
            "examples": self.ledger.examples,
            "cache": self._cache,
        }
        training = self.ledger.training_cache()
        if training is not None:
            state[TRAINING_CACHE] = training
        write_state(self.state_path, state)

    # -- what leaves ------------------------------------------------------------------------------
    def spent(self) -> tuple[float, float]:
        """This run's per-release total (every value sent, composed) at ``budget_delta``: what a reply
        carries. It depends only on what the server asked, never on what the client holds."""
        return self.ledger.run_epsilon(self.run), self.policy.budget_delta

    def report(self) -> dict[str, Any]:
        """The organisation's per-example totals (all runs), for itself and a simulation's results."""
        return self.ledger.summary(self._key(self.form))

    def rewards(
        self, question: str, candidates: list[str], rewards: list[float | None], method: str
    ) -> list[float | None]:
        """The rewards to send for one item, one per candidate, never None: each privatised, cached or
        free noise (``method`` "none" or a None reward: the client cannot judge it)."""
        out: list[float | None] = []
        for text, reward in zip(candidates, rewards, strict=True):
            answer = parsed_answer(text)
            key = "a:" + (answer_key(answer) if answer else "")
            value = None if reward is None or method == "none" else min(max(reward, 0.0), 1.0)
            out.append(self._release(question, key, value, method == "answer", self.form))
        return out

    def bit(self, question: str, bit: int) -> int:
        """A competence bit (the model's) by randomised response, cached per question."""
        return int(self._release(question, "competence", float(bit), False, "rr", per_question=False))

    def _release(
        self,
        question: str,
        answer: str,
        value: float | None,
        answer_check: bool,
        kind: Kind,
        per_question: bool = True,
    ) -> float:
        answers = self._cache.setdefault(normalise_question(question), {})
        if answer in answers:
            self.stats.cached += 1
            return answers[answer]
        key, source = self._key(kind), "noise"
        if value is None:
            pass
        elif per_question and sum(a != "competence" for a in answers) >= self.policy.max_answers_per_question:
            self.stats.over_query_budget += 1
        elif not answer_check:
            source = "model_releases"
        elif self.ledger.fits(example := example_id(question), key):
            self.ledger.charge(example, key)
            source = "answer_checks"
        else:
            self.stats.over_privacy_budget += 1
        if source == "noise":
            released = self._free_noise(kind)
        else:
            assert value is not None
            released = self._noise(value, kind)
        self.ledger.sent(self.run, key, source)
        if self.remember:
            answers[answer] = released
        self.stats.released += 1
        self.stats.noise += source == "noise"
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

    def _free_noise(self, kind: Kind) -> float:
        """A value of ``kind``'s form that depends on no data: a fair coin, or the mechanism at 0.5."""
        if kind == "rr":
            return float(self.rng.random() < 0.5)
        return self._noise(0.5, kind)
