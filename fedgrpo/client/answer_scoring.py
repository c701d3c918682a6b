"""Client-side evaluation of candidate answers: the only place a client's labels are used.

Answer-based evaluation (AE): the client looks the question up in its own data and scores each
candidate's final answer with the task's own exact scorer: correctness only, in [0, 1] (what the
server derives from the candidate text alone, it adds itself). A client that does not hold the
question returns None for every candidate, never 0, so the server can tell "wrong" from "cannot
judge".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedgrpo.data import Example, normalise_question, score_answer
from fedgrpo.method.answers import extract_answer
from fedgrpo.protocol import Method


@dataclass(frozen=True)
class Evaluation:
    rewards: list[float | None]
    method: Method


class AnswerEvaluator:
    """Scores candidates against the client's own answers (the paper's AE)."""

    def __init__(self, examples: Iterable[Example]) -> None:
        self._by_question: dict[str, Example] = {}
        for ex in examples:
            self._by_question.setdefault(normalise_question(ex.question), ex)

    def __len__(self) -> int:
        return len(self._by_question)

    def holds(self, question: str) -> bool:
        return normalise_question(question) in self._by_question

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        example = self._by_question.get(normalise_question(question))
        if example is None:
            return Evaluation([None] * len(candidates), "none")
        rewards: list[float | None] = [score_answer(example, extract_answer(text)) for text in candidates]
        return Evaluation(rewards, "answer")
