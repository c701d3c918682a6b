"""The selector interface and the selectors that need no graph.

``random`` (M clients drawn per question, seeded) and ``all`` (every client) are the baselines;
``oracle`` routes by true domain labels, for evaluation only. The paper's Module 1 is in
:mod:`fedgrpo.selection.confidence_graph`; :mod:`fedgrpo.selection.factory` builds any of them.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence

from fedgrpo.data import Question


class Selector(ABC):
    name: str

    @abstractmethod
    def select(self, questions: Sequence[Question], clients: Sequence[str], m: int) -> dict[str, list[str]]:
        """Map each question id to the clients asked to score it (in preference order)."""

    def rank_questions(
        self, questions: Sequence[Question], clients: Sequence[str]
    ) -> dict[str, list[str]] | None:
        """Every available client per question, most preferred first; None for selectors that cannot rank.

        A ranking lets the federation replace an expert that cannot judge with the next one.
        """
        return None

    def feedback(self, question: Question, client: str, agreement: float, rate: float) -> bool:
        """How well ``client`` agreed with the other experts on ``question``; True if it was used."""
        return False

    def competences(self) -> dict[str, float] | None:
        """Each client's overall competence as this selector now sees it (``fed/competence``), or None
        for selectors that keep none: how the online updates move a client, e.g. a persistent liar."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - stateless by default
        pass


class RandomSelector(Selector):
    """M distinct clients per question, uniformly at random; the baseline routing."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def select(self, questions: Sequence[Question], clients: Sequence[str], m: int) -> dict[str, list[str]]:
        if m > len(clients):
            raise ValueError(f"cannot pick M={m} experts from {len(clients)} clients")
        return {q.qid: self._rng.sample(list(clients), m) for q in questions}

    def state_dict(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


class AllSelector(Selector):
    """Every client judges every question; M is ignored."""

    name = "all"

    def select(self, questions: Sequence[Question], clients: Sequence[str], m: int) -> dict[str, list[str]]:
        return {q.qid: list(clients) for q in questions}


class OracleSelector(Selector):
    """Pick the M clients holding the most examples of the question's domain (ties: order of ``clients``).

    Uses the true domain labels, which training must not see: for evaluation only, as an upper
    bound on what any text-based routing can achieve.
    """

    name = "oracle"

    def __init__(self, client_domains: dict[str, dict[str, int]]) -> None:
        self.client_domains = {c: dict(d) for c, d in client_domains.items()}

    def select(self, questions: Sequence[Question], clients: Sequence[str], m: int) -> dict[str, list[str]]:
        if not 0 <= m <= len(clients):
            raise ValueError(f"cannot pick M={m} experts from {len(clients)} clients")
        unknown = [c for c in clients if c not in self.client_domains]
        if unknown:
            raise KeyError(f"no domain counts for clients {unknown}")
        out: dict[str, list[str]] = {}
        for q in questions:
            # sorted() is stable, so equal counts keep the order of `clients`
            ranked = sorted(clients, key=lambda c: -self.client_domains[c].get(q.domain, 0))
            out[q.qid] = list(ranked[:m])
        return out
