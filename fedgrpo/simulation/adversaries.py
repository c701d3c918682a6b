"""Simulated adversarial clients, for robustness experiments only (``clients.adversaries``).

Only a simulation's client construction (:mod:`fedgrpo.simulation.clients`) wraps a client's evaluator with
one of these; a deployed organisation's client never does. The wrapper lies about candidates and
nothing else: it keeps the protocol (every reward a correctness in ``[0, 1]``, honest method counts)
so that the server's checks let it through (the server then adds the format reward to well-formed
candidates, as for any client), and it answers competence queries with the
honest client model (it passes the confidence graph's build and has to be caught by the online
updates).

* ``flip``: a poisoned expert: its correctness is inverted (``1 - c``); where the honest client could
  not judge it abstains too.
* ``always-high``: correctness 1 for every candidate of every question.
* ``random``: correctness uniform in ``[0, 1]``, seeded per run and client.
* ``colluding``: two or more clients promote the same answer: per question they pick, by a rule they
  share (a seeded hash), one of the candidates' final answers, most often a wrong one, and give
  correctness 1 to the candidates with that answer and 0 to all others. They therefore agree with
  each other exactly, whoever else they disagree with.
* ``aux-aware``: a liar that tries to dodge spot checks: it notes the shape (the normalised text with
  every number masked) of each question the server sent with its own answer (the competence
  queries: the only labelled questions a client ever sees from the server), scores honestly every
  question of a shape it noted, and flips the others. Canaries drawn like the training questions
  share their shapes, so it is honest on training questions too (harmless); canaries that look like
  the auxiliary set but not like the training questions would let it lie unseen (``docs/trust.md``).

The three uninformed behaviours score every question, also those the honest client would abstain on:
a liar gains influence by always having an opinion.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import get_args

from fedgrpo.client import ClientModel, Evaluation, Evaluator
from fedgrpo.client.dual import prepare_answers
from fedgrpo.config import AdversaryBehaviour as Behaviour
from fedgrpo.data import normalise_question
from fedgrpo.method.answers import answer_key, extract_answer

BEHAVIOURS: tuple[Behaviour, ...] = get_args(Behaviour)


class AdversarialEvaluator:
    """A client's honest evaluator with one adversarial behaviour laid over its rewards."""

    def __init__(self, honest: Evaluator, behaviour: Behaviour, seed: int, name: str) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown adversarial behaviour {behaviour!r}; choose one of {list(BEHAVIOURS)}")
        self.honest = honest
        self.behaviour = behaviour
        self.seed = seed
        self._rng = random.Random(f"{seed}-{name}")  # str seeds are hashed deterministically
        self.server_shapes: set[str] = set()  # aux-aware: shapes of the questions the server labelled

    def __repr__(self) -> str:
        return f"AdversarialEvaluator({self.behaviour!r}, {self.honest!r})"

    @property
    def model(self) -> ClientModel | None:
        """The honest client model, which still answers the competence queries (``aux-aware``: one
        that notes the shapes of the questions it is asked there)."""
        model = getattr(self.honest, "model", None)
        if self.behaviour == "aux-aware" and model is not None:
            return _NotingShapes(model, self.server_shapes)
        return model

    def prepare(self, questions: list[str]) -> None:
        """The honest evaluator's ``prepare``, where it has one (the liar still scores honestly first)."""
        prepare_answers(self.honest, questions)

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        honest = self.honest.evaluate(question, candidates)
        claimed = honest.method if honest.method != "none" else "model"
        if self.behaviour == "aux-aware" and question_shape(question) in self.server_shapes:
            return honest
        if self.behaviour in ("flip", "aux-aware"):
            flipped = [None if r is None else 1.0 - min(max(r, 0.0), 1.0) for r in honest.rewards]
            return Evaluation(flipped, honest.method)
        if self.behaviour == "always-high":
            return Evaluation([1.0] * len(candidates), claimed)
        if self.behaviour == "random":
            return Evaluation([self._rng.uniform(0.0, 1.0) for _ in candidates], claimed)
        return Evaluation(self._colluding(question, candidates), claimed)

    def _colluding(self, question: str, candidates: list[str]) -> list[float]:
        """Correctness 1 to the candidates whose answer the shared rule picks, 0 to the others."""
        keys = [_answer_of(c) for c in candidates]
        given = sorted({k for k in keys if k is not None})
        if not given:
            return [0.0] * len(candidates)
        target = min(given, key=lambda k: self._shared_hash(question, k))
        return [1.0 if k == target else 0.0 for k in keys]

    def _shared_hash(self, question: str, key: str) -> str:
        """The same for every colluder of a run: seed, question and answer only, nothing private."""
        text = f"{self.seed}|{normalise_question(question)}|{key}"
        return hashlib.sha256(text.encode()).hexdigest()


def question_shape(question: str) -> str:
    """What a question looks like without its numbers: its template."""
    return re.sub(r"\d+", "#", normalise_question(question))


class _NotingShapes:
    """A client model that notes the shape of every question it answers (the competence queries)."""

    def __init__(self, model: ClientModel, shapes: set[str]) -> None:
        self._model, self._shapes = model, shapes

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        return self._model.evaluate(question, candidates)

    def answer(self, question: str) -> str | None:
        self._shapes.add(question_shape(question))
        return self._model.answer(question)

    def answers(self, questions: list[str]) -> list[str | None]:
        self._shapes.update(question_shape(q) for q in questions)
        many = getattr(self._model, "answers", None)
        return many(questions) if many else [self._model.answer(q) for q in questions]


def _answer_of(candidate: str) -> str | None:
    found = extract_answer(candidate)
    return answer_key(found) if found else None
