"""The organisation's privacy ledger: what each of its examples has spent, and what each run released.

Label-level differential privacy, per example. Two datasets are neighbours when they differ in one
example's label (its answer). An answer check depends on one example only (the row whose question it
is), so it is charged to that example and to no other (parallel composition over disjoint examples).
Each example keeps its own privacy loss distribution (PLD, ``dp-accounting``), built from the values
charged to it; its (epsilon, delta) is that PLD's, composed with the expert's training privacy when
the expert was trained with DP-SGD (``private_training.TrainingPrivacy``: every example is in its
training data).

Model-based releases (model scores, agreement bits, competence bits) are functions of the expert:
with a private expert they are post-processing of it and cost nothing more; without one they are
*not* covered by the per-example figure and are counted as ``model_releases_uncovered``. Every value
sent is still eps-DP on its own (randomised response or Laplace on a value in [0, 1], whatever it was
computed from), so the per-release total (every value sent, composed) bounds them all, loosely.

A charge is keyed ``KIND:EPSILON[:DELTA]`` so that an organisation that changes its per-value epsilon
between runs still composes each value at the epsilon it was released with.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from fedgrpo.data import normalise_question

Kind = Literal["rr", "laplace", "gaussian"]
KINDS: tuple[Kind, ...] = ("rr", "laplace", "gaussian")
DISCRETISATION = 1e-3  # PLD grid; the library's estimate is pessimistic (an upper bound) on any grid

Charges = dict[str, int]  # "rr:1.0" / "laplace:0.5" / "gaussian:1.0:1e-06" -> values released


class TrainingPrivacyLike(Protocol):
    """The expert's DP-SGD training privacy (``fedgrpo.client.private_training.TrainingPrivacy``):
    anything that gives its privacy loss distribution on a grid, and the values that determine it
    (the key its compositions are cached under)."""

    def pld(self, value_discretization_interval: float) -> Any: ...

    def values(self) -> dict[str, Any]: ...


def example_id(question: str) -> str:
    """A stable id of the client's row whose question this is (never sent anywhere)."""
    return hashlib.sha256(normalise_question(question).encode()).hexdigest()[:16]


def charge_key(kind: Kind, epsilon: float, delta_per_value: float = 0.0) -> str:
    """The key a value is charged under: its mechanism and the parameters it was released with."""
    return f"{kind}:{epsilon!r}" + (f":{delta_per_value!r}" if kind == "gaussian" else "")


def _single_pld(key: str) -> Any:
    from dp_accounting import NeighboringRelation, get_sigma_gaussian
    from dp_accounting.pld import privacy_loss_distribution as pld

    kind, *params = key.split(":")
    epsilon = float(params[0])
    if kind == "rr":
        return pld.from_randomized_response(
            noise_parameter=2.0 / (1.0 + math.exp(epsilon)),
            num_buckets=2,
            value_discretization_interval=DISCRETISATION,
            neighboring_relation=NeighboringRelation.REPLACE_ONE,
        )
    if kind == "laplace":
        return pld.from_laplace_mechanism(
            parameter=1.0 / epsilon, sensitivity=1.0, value_discretization_interval=DISCRETISATION
        )
    if kind == "gaussian":
        sigma = float(get_sigma_gaussian(epsilon, float(params[1])))
        return pld.from_gaussian_mechanism(
            standard_deviation=sigma, sensitivity=1.0, value_discretization_interval=DISCRETISATION
        )
    raise ValueError(f"unknown privacy charge {key!r}")


def vector_key(charges: Mapping[str, int]) -> str:
    """A charge vector as one string (``rr:1.0=3|laplace:0.5=1``), the composition cache's key."""
    return "|".join(f"{k}={n}" for k, n in sorted(charges.items()) if n)


def pure_epsilon_sum(charges: Mapping[str, int]) -> float | None:
    """Basic composition of pure-DP charges (no PLD needed); None when a gaussian value is among them."""
    if any(k.startswith("gaussian") for k, n in charges.items() if n):
        return None
    return sum(float(k.split(":")[1]) * n for k, n in charges.items())


class Accountant:
    """Composes charges (and the expert's training privacy) into epsilon at one delta, memoised.

    The library's ``PLDAccountant`` takes one neighbouring relation for all events and accepts
    randomised response only under "replace one" and Laplace only under "add or remove"; for a label
    that is replaced the two mean the same thing here (a value in [0, 1], sensitivity 1), so the PLDs
    are built and composed directly with the library's own constructors.
    """

    def __init__(self, delta: float, training: TrainingPrivacyLike | None = None) -> None:
        self.delta = delta
        self.training = training
        self._memo: dict[tuple[tuple[str, int], ...], float] = {}

    @functools.cached_property
    def _training_pld(self) -> Any:
        return None if self.training is None else self.training.pld(DISCRETISATION)

    def composed_with_training(self) -> dict[str, float]:
        """Every epsilon composed with the training privacy so far (charge vector -> epsilon)."""
        return {vector_key(dict(m[:-1])): e for m, e in self._memo.items() if m[-1] == ("training", 1)}

    def remember_with_training(self, composed: Mapping[str, str | float]) -> None:
        """Epsilons composed with this training privacy by an earlier process (its cached entry)."""
        for vector, epsilon in composed.items():
            charges = (p.rsplit("=", 1) for p in vector.split("|") if p)
            key = tuple(sorted((k, int(n)) for k, n in charges))
            self._memo[(*key, ("training", 1))] = float(epsilon)

    def epsilon(self, charges: Mapping[str, int], with_training: bool = True) -> float:
        """Epsilon at ``delta`` of ``charges`` (composed with the training privacy, when given)."""
        key = tuple(sorted((k, n) for k, n in charges.items() if n))
        training = with_training and self.training is not None
        memo = (*key, ("training", int(training)))
        if memo not in self._memo:
            total = self._training_pld if training else None
            for charge, n in key:
                part = _single_pld(charge).self_compose(n)
                total = part if total is None else total.compose(part)
            epsilon = 0.0 if total is None else float(total.get_epsilon_for_delta(self.delta))
            basic = None if training else pure_epsilon_sum(dict(key))
            # pure-DP values compose to at most their sum (at delta 0): the discretised PLD can land
            # just above it (8 checks at 0.5: 4.0076), and the budget check accepts on the sum
            self._memo[memo] = epsilon if basic is None else min(epsilon, basic)
        return self._memo[memo]

    def remember(self, charges: Mapping[str, int], epsilon: float) -> None:
        """The epsilon of ``charges`` (without training), composed by an earlier process."""
        self._memo[(*tuple(sorted((k, n) for k, n in charges.items() if n)), ("training", 0))] = epsilon


def add(charges: Charges, key: str, n: int = 1) -> Charges:
    charges[key] = charges.get(key, 0) + n
    return charges


def distinct(charges: Iterable[Charges]) -> list[Charges]:
    """The distinct charge vectors among many examples' (each composed once)."""
    seen: dict[tuple[tuple[str, int], ...], Charges] = {}
    for c in charges:
        seen.setdefault(tuple(sorted(c.items())), c)
    return list(seen.values())


TRAINING_CACHE = "training_epsilons"  # the state's key of Ledger.training_cache()
SOURCES = ("answer_checks", "model_releases", "noise")


class Ledger:
    """One organisation's spend: per example (all runs) and per run (what it sent), in a plain dict
    that :mod:`fedgrpo.client.privacy_state` persists.

    ``budget_epsilon`` (None: no cap) at ``budget_delta`` bounds each example's epsilon; an answer
    check that would take its example past it is not released (the caller sends free noise instead).
    """

    def __init__(
        self,
        budget_epsilon: float | None,
        budget_delta: float,
        training: TrainingPrivacyLike | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.budget_epsilon = budget_epsilon
        self.accountant = Accountant(budget_delta, training)
        state = state or {}
        self.examples: dict[str, Charges] = {e: dict(c) for e, c in state.get("examples", {}).items()}
        self.runs: dict[str, dict[str, Any]] = {r: dict(v) for r, v in state.get("runs", {}).items()}
        for record in self.runs.values():  # the spend of these values, composed by an earlier process
            if "per_release_epsilon" in record:
                self.accountant.remember(record["values_sent"], float(record["per_release_epsilon"]))
        cached = state.get(TRAINING_CACHE)
        if cached and training is not None and cached.get("key") == self._training_key():
            self.accountant.remember_with_training(cached.get("epsilons", {}))

    def _training_key(self) -> dict[str, Any]:
        assert self.accountant.training is not None
        return {**self.accountant.training.values(), "delta": self.accountant.delta, "grid": DISCRETISATION}

    def training_cache(self) -> dict[str, Any] | None:
        """The state's cache of epsilons composed with the expert's training privacy, keyed by what
        determines them (the training's values, delta, the grid); None without a DP-SGD expert.

        Every ClientApp process would otherwise rebuild the training's PLD and compose it again with
        each example's charges. dp-accounting has no public way to save a PLD, so the epsilons are
        cached, not the distribution; a changed expert (other values) has another key, and its
        entry replaces this one.
        """
        if self.accountant.training is None:
            return None
        return {"key": self._training_key(), "epsilons": self.accountant.composed_with_training()}

    @property
    def covered(self) -> bool:
        """Whether model-based releases are covered (post-processing of a DP-SGD expert)."""
        return self.accountant.training is not None

    def fits(self, example: str, key: str) -> bool:
        """Whether one more value charged under ``key`` keeps ``example`` within its budget."""
        if self.budget_epsilon is None:
            return True
        charges = add(dict(self.examples.get(example, {})), key)
        basic = pure_epsilon_sum(charges)
        if basic is not None and not self.covered and basic <= self.budget_epsilon:
            return True  # basic composition of pure-DP values already fits: no PLD needed
        return self.accountant.epsilon(charges) <= self.budget_epsilon

    def charge(self, example: str, key: str) -> None:
        add(self.examples.setdefault(example, {}), key)

    def sent(self, run: str, key: str, source: str) -> None:
        """One value sent in ``run`` (an answer check, a model release or free noise), under ``key``."""
        record = self.run_record(run)
        add(record["values_sent"], key)
        record[source] += 1
        if source == "model_releases" and not self.covered:
            record["model_releases_uncovered"] += 1

    def run_record(self, run: str) -> dict[str, Any]:
        record = self.runs.setdefault(run, {"values_sent": {}, "model_releases_uncovered": 0})
        for source in SOURCES:
            record.setdefault(source, 0)
        return record

    def run_epsilon(self, run: str) -> float:
        """The per-release total of ``run``: every value it sent, composed (noise and cache hits
        included and excluded alike for every client, so it depends only on what the server asked)."""
        return self.accountant.epsilon(self.run_record(run)["values_sent"], with_training=False)

    def example_epsilon(self, example: str) -> float:
        return self.accountant.epsilon(self.examples.get(example, {}))

    def summary(self, next_key: str) -> dict[str, Any]:
        """The organisation's totals: the largest per-example epsilon (all runs), the budget, how many
        examples reached it (one more ``next_key`` value would exceed it), and what is not covered."""
        vectors = distinct(self.examples.values()) or [{}]
        worst = max(self.accountant.epsilon(c) for c in vectors)
        full = {tuple(sorted(c.items())) for c in vectors if not self._fits_charges(c, next_key)}
        at_budget = sum(tuple(sorted(c.items())) in full for c in self.examples.values())
        return {
            "per_example_epsilon_max": round(worst, 6),
            "delta": self.accountant.delta,
            "budget_epsilon": self.budget_epsilon,
            "examples_charged": len(self.examples),
            "examples_at_budget": at_budget,
            "training_privacy_composed": self.covered,
            "model_releases_uncovered": sum(r["model_releases_uncovered"] for r in self.runs.values()),
        }

    def _fits_charges(self, charges: Charges, key: str) -> bool:
        if self.budget_epsilon is None:
            return True
        return self.accountant.epsilon(add(dict(charges), key)) <= self.budget_epsilon
