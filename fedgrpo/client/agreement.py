"""The agreement rule of model-based evaluation, shared by every client model wherever it runs.

A client model (in this process: :class:`~fedgrpo.client.model_scoring.ModelEvaluator`; behind an
endpoint: :class:`~fedgrpo.client.endpoint_scoring.EndpointEvaluator`) answers a question itself a
few times; its majority answer is the reference, and each candidate scores 1/0 on agreeing with it
(correctness only). Torch-free, so an endpoint-served client never imports a model library.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal

from fedgrpo.client.answer_scoring import Evaluation
from fedgrpo.method.answers import answer_key, parsed_answer

__all__ = ["Mode", "SampledScorer", "ScoringSettings", "agreement_rewards", "majority_answer"]

Mode = Literal["agreement", "likelihood"]


@dataclass(frozen=True)
class ScoringSettings:
    """How a client model scores, the same wherever it runs (the run's ``clients.*`` and ``seed``),
    checked once: it answers a question itself ``samples`` times (``max_new_tokens`` each, at
    ``temperature``, seeded from ``seed`` and the question) and scores a candidate by ``mode``.
    ``worked_example``: the prompt shows one solved example. ``cache_size``: the questions whose own
    answer is kept. ``direct_answer``: a model in this process replies from inside the answer tag
    (:mod:`fedgrpo.client.model_scoring`); an endpoint's replies are what its server writes."""

    mode: Mode = "agreement"
    samples: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.7
    seed: int = 0
    worked_example: bool = True
    cache_size: int = 4096
    direct_answer: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("agreement", "likelihood"):
            raise ValueError(f"unknown model-evaluation mode {self.mode!r}")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("sampling more than one answer needs a positive temperature")
        if self.cache_size < 0:
            raise ValueError("cache_size must be at least 0")


class SampledScorer:
    """What every client model shares: its :class:`ScoringSettings` and the answers it keeps.

    A question's own answer is seeded by the question alone (or, answered in one batch with the other
    questions of a request, by those questions together). It is kept (the ``cache_size`` most
    recently used, by normalised question), so it is the same every time the question is asked, and
    a question asked again, in a later epoch or by a replacement round, costs no generation."""

    def __init__(self, settings: ScoringSettings) -> None:
        self.settings = settings
        self._references: OrderedDict[str, str | None] = OrderedDict()

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        """One reward per candidate with method "model", or all None ("none") when it cannot judge:
        each candidate's likelihood under the model (``likelihood``), or whether its final answer
        agrees with the model's own (``agreement``)."""
        if not candidates:
            return Evaluation([], "model")
        if self.settings.mode == "likelihood":
            return Evaluation(self._likelihood(question, candidates), "model")
        reference = self.answer(question)
        if reference is None:
            return Evaluation([None] * len(candidates), "none")
        return Evaluation(agreement_rewards(reference, candidates), "model")

    def answer(self, question: str) -> str | None:  # the model's majority answer: each scorer's own
        raise NotImplementedError

    def _likelihood(self, question: str, candidates: list[str]) -> list[float | None]:
        raise NotImplementedError

    def _recall(self, key: str) -> tuple[bool, str | None]:
        """(True, the kept answer) for a question answered before; (False, None) otherwise."""
        if key not in self._references:
            return False, None
        self._references.move_to_end(key)
        return True, self._references[key]

    def _remember(self, key: str, reference: str | None) -> None:
        if self.settings.cache_size:
            self._references[key] = reference
            while len(self._references) > self.settings.cache_size:
                self._references.popitem(last=False)


def majority_answer(completions: list[str]) -> str | None:
    """The majority final answer of a model's samples; None when no sample has one.

    Answers are grouped by :func:`~fedgrpo.method.answers.answer_key` (so "7" and "7.0" vote together); ties
    go to the group seen first, and the answer returned is that group's first spelling.
    """
    answers = [a for a in (parsed_answer(t) for t in completions) if a is not None]
    if not answers:
        return None
    keys = [answer_key(a) for a in answers]
    winner = Counter(keys).most_common(1)[0][0]  # most_common keeps first-seen order on ties
    return answers[keys.index(winner)]


def agreement_rewards(reference: str, candidates: list[str]) -> list[float | None]:
    """1 for each candidate whose final answer agrees with ``reference``, else 0."""
    ref_key = answer_key(reference)
    rewards: list[float | None] = []
    for text in candidates:
        predicted = parsed_answer(text)
        agrees = predicted is not None and answer_key(predicted) == ref_key
        rewards.append(1.0 if agrees else 0.0)
    return rewards
