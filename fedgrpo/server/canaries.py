"""Hidden spot checks (canaries): server-labelled questions mixed into the prompts the policy trains on.

Why in the prompts, not as extra items: a canary's candidates must come from the policy like any other
question's, or their form (length, style, how many are right) would tell them apart. So the server
adds its canary questions to the questions it samples prompts from (:func:`with_canaries`); TRL
generates G candidates for them like for any prompt, and the reward round sends them in the same
requests, under the same opaque per-request keys. Only this server-side object knows which qids are
canaries (a qid never crosses the wire). A canary is routed like any question (the selector's M
experts among the clients still trusted), and to ``fanout`` more (the next in the selector's order,
or drawn at random): evidence accrues only where canaries are asked. Each client sees only its own
request, so it cannot see the fan-out; colluders who compare notes see that they were asked together
more often than M alone would make them (``docs/trust.md`` weighs it). Its rewards are
checked against the server's own answer (:mod:`fedgrpo.server.reputation`) and its advantages are
all zero: canary rewards never reach the loss, nor the ``fed/`` reward metrics (``fed/canary_*``).
The confidence graph's online updates take them like any question's (agreement between experts).
The price: the canary share of each step's generation and scoring carries no training signal.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from fedgrpo.data import Example, Question
from fedgrpo.method.answers import answer_key, extract_answer, is_correct, reward_for
from fedgrpo.server.reputation import Reputation
from fedgrpo.storage.atomic import write_json_atomic

log = logging.getLogger(__name__)

REPUTATION_FILE = "reputation.json"


def canary_count(train_questions: int, share: float) -> int:
    """Canaries needed for ``share`` of the prompts: ``n / (train + n) = share``."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"canary share must be in [0, 1), got {share}")
    return math.ceil(share * train_questions / (1.0 - share)) if share else 0


def with_canaries(
    train: Sequence[Question], canaries: Sequence[Example], share: float
) -> tuple[list[Question], list[Example]]:
    """The prompts' questions (training questions, then canaries; the trainer shuffles them) and the
    canaries used: as many as ``share`` needs, fewer (logged) when fewer are given; a canary whose
    text is also a training question is dropped (logged): it would be trained on."""
    taken = {q.qid for q in train}
    usable = [ex for ex in canaries if ex.qid not in taken]
    if len(usable) < len(canaries):
        log.warning("%d canaries are also training questions; left out", len(canaries) - len(usable))
    need = canary_count(len(train), share)
    if len(usable) < need:
        log.warning(
            "canary share %.3f needs %d canaries for %d training questions; only %d given, so the share "
            "is %.3f",
            share,
            need,
            len(train),
            len(usable),
            len(usable) / max(len(train) + len(usable), 1),
        )
    used = usable[:need]
    return [*train, *(Question(ex.qid, ex.domain, ex.question) for ex in used)], used


class Canaries:
    """The server's canary set and every client's reputation, inside the reward round."""

    def __init__(
        self,
        examples: Sequence[Example],
        reputation: Reputation,
        format_reward: float,
        run_folder: Path | None = None,
        fanout: int = 0,
        seed: int = 0,
        one_answer: bool = False,
    ) -> None:
        """``one_answer``: the clients score by agreement with their own answer, so the one-answer test
        applies (:mod:`fedgrpo.server.reputation`) to each whose replies carry no privacy spend."""
        if fanout < 0:
            raise ValueError(f"canary fanout must be >= 0, got {fanout}")
        self._by_qid = {ex.qid: ex for ex in examples}
        self.fanout = fanout
        self._rng = random.Random(f"canary-fanout-{seed}")
        self.reputation = reputation
        self.format_reward = format_reward
        self.one_answer = one_answer
        self._path = None if run_folder is None else run_folder / REPUTATION_FILE

    def is_canary(self, question: Question) -> bool:
        return question.qid in self._by_qid

    def trusted(self, clients: Sequence[str]) -> list[str]:
        """``clients`` without the excluded; an error when none is left (the run cannot go on)."""
        excluded = self.reputation.excluded()
        kept = [c for c in clients if c not in excluded]
        if clients and not kept:
            raise RuntimeError(f"every client is excluded by its canary answers ({sorted(excluded)})")
        return kept

    def widen(
        self,
        routing: dict[str, list[str]],
        questions: Sequence[Question],
        clients: Sequence[str],
        orders: dict[str, list[str]] | None,
    ) -> dict[str, list[str]]:
        """``routing`` with each canary asked of ``fanout`` more trusted clients: the next in the
        selector's order where it ranks them, else drawn at random."""
        if not self.fanout:
            return routing
        widened = dict(routing)
        for q in questions:
            if q.qid not in self._by_qid:
                continue
            order = [c for c in (orders or {}).get(q.qid, []) if c in clients]
            if not order:
                order = self._rng.sample(list(clients), len(clients))
            extra = [c for c in order if c not in routing[q.qid]][: self.fanout]
            widened[q.qid] = [*routing[q.qid], *extra]
        return widened

    def groups(self, questions: Sequence[Question]) -> set[int]:
        """The positions of the canaries among a round's questions."""
        return {j for j, q in enumerate(questions) if q.qid in self._by_qid}

    def observe(
        self,
        question: Question,
        candidates: Sequence[str],
        experts: Sequence[str],
        matrix: torch.Tensor,
        private: Collection[str] = (),
    ) -> int:
        """Score each expert's rewards for a canary against the server's answer; returns how many
        rewards were checked. A reward's correctness is the reward less the server's format bonus.
        Only candidates with a tagged answer count: one without is wrong on its face, so calling it
        wrong says nothing about honesty (a colluder never promotes it either). ``private``: clients
        whose replies carry privacy noise (randomised response calls answers right at random: no
        one-answer test for them)."""
        example = self._by_qid[question.qid]
        truth = [is_correct(example, text) for text in candidates]
        bonus = [reward_for(0.0, text, self.format_reward) for text in candidates]
        answers = [answer_key(a) if (a := extract_answer(text)) is not None else None for text in candidates]
        checked = 0
        for e, client in enumerate(experts):
            scored = [
                (i, v)
                for i, v in enumerate(matrix[e].tolist())
                if answers[i] is not None and not math.isnan(v)
            ]
            if scored:
                says = [v - bonus[i] >= 0.5 for i, v in scored]
                keys = (
                    [str(answers[i]) for i, _ in scored]
                    if self.one_answer and client not in private
                    else None
                )
                self.reputation.observe(client, [truth[i] for i, _ in scored], says, keys)
                checked += len(scored)
        return checked

    def end_round(self, round_: int) -> list[str]:
        """Update the exclusions and ``reputation.json``; returns the clients excluded now."""
        newly = self.reputation.update(round_)
        if self._path is not None:
            write_json_atomic(self._path, {"round": round_, **self.reputation.report()})
        return newly

    def state_dict(self) -> dict[str, Any]:
        return self.reputation.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reputation.load_state_dict(state)
