"""The paper's dual gate, and what a client model must offer to sit behind it.

Torch-free: the gate only chooses between evaluators, so a client whose model is served elsewhere
(an endpoint) or that has none loads no model library at all.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fedgrpo.client.answer_scoring import AnswerEvaluator, Evaluation

__all__ = ["ClientModel", "DualEvaluator", "ModelUnavailableError"]


class ModelUnavailableError(RuntimeError):
    """The client model cannot answer now (its server is down or failing); says why.

    The client then abstains on what only the model could score, instead of failing the request:
    a down model server must not take the client's answer-based scoring down with it.
    """


@runtime_checkable
class ClientModel(Protocol):
    """A client's own model, wherever it runs: it scores candidates and answers questions itself
    (the confidence graph's competence queries). May raise :class:`ModelUnavailableError`."""

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation: ...

    def answer(self, question: str) -> str | None: ...


def prepare_answers(evaluator: object, questions: list[str]) -> None:
    """Let ``evaluator`` answer a request's questions in one batch before it scores them, where it
    can (its ``prepare``: an in-process client model, the dual gate, a simulated liar over either);
    any other answers each question when it scores it."""
    prepare = getattr(evaluator, "prepare", None)
    if prepare is not None:
        prepare(questions)


class DualEvaluator:
    """The paper's dual gate: answer-based where the client holds the question, model-based otherwise.

    A trusted answer always wins over the client model's opinion; a client with neither abstains
    (all None, "none"), so the server can tell "cannot judge" from "wrong".
    """

    def __init__(self, answers: AnswerEvaluator, model: ClientModel | None) -> None:
        self.answers = answers
        self.model = model

    def __repr__(self) -> str:
        return f"DualEvaluator({len(self.answers)} answers, model={self.model!r})"

    def prepare(self, questions: list[str]) -> None:
        """Let the client model answer, in one go, the questions of a request it will score (those
        the client does not hold)."""
        prepare_answers(self.model, [q for q in questions if not self.answers.holds(q)])

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        if self.answers.holds(question):
            return self.answers.evaluate(question, candidates)
        if self.model is not None:
            return self.model.evaluate(question, candidates)
        return Evaluation([None] * len(candidates), "none")
