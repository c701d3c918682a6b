"""Expert selection: which M clients judge each question.

The confidence graph (paper's Module 1) plugs in here as another :class:`Selector`. Until then
``random`` (M clients drawn per question, seeded) and ``all`` (every client) are available.
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


SELECTORS = ("random", "all")


def make_selector(name: str, seed: int) -> Selector:
    if name == "random":
        return RandomSelector(seed)
    if name == "all":
        return AllSelector()
    raise ValueError(f"unknown selector {name!r}; choose one of {list(SELECTORS)}")
