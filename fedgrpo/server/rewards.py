"""The server's round: route candidates to experts, collect their rewards, return advantages.

:class:`FederatedAdvantage` is what TRL's ``GRPOTrainer`` calls as its one reward function. TRL hands
it every completion of a generation batch (each prompt repeated G times in a row); it picks experts
per question with the selector, sends one batched request per client (:mod:`fedgrpo.server.exchange`),
keeps the rewards that pass every check, and returns the federated group-relative **advantage** of
each candidate (:mod:`fedgrpo.method.objective`), not a reward. TRL runs with ``scale_rewards="none"`` and
this single function, so the advantage TRL uses is exactly the value returned here (TRL subtracts the
group mean, which is already zero). The rewards themselves go to the ``fed/`` metrics.

With a selector that can rank (the confidence graph), the first M clients per question are asked;
an expert that returns no reward at all is replaced once, in one extra exchange, by the next most
competent client not yet asked, and after the round each expert's graph edges near the question move
towards its agreement with the other experts (online update).

Item keys are opaque (a counter per request), never the question id: a qid hashes the question's
domain, so it would tell a client every question's domain. Request ids are random
(:func:`~fedgrpo.protocol.new_request_id`), so a client cannot tell a replacement request from a
first one, nor the round. A client sends correctness only (exact, or a model score), which must lie
in ``[0, 1]``; the server then adds ``federation.format_reward`` to each present reward of a candidate
whose answer tag is well formed (:func:`~fedgrpo.method.answers.reward_for`: a function of the text
it already holds, so no client computes or declares it), before the advantage. A reply's per-method
counts feed ``fed/methods`` and ``fed/abstentions``; a private client's (a reply with a privacy spend)
are a constant that hides membership, counted as ``hidden``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedgrpo.data import Question
from fedgrpo.method.aggregation import Aggregation
from fedgrpo.method.answers import DEFAULT_FORMAT_REWARD, reward_for
from fedgrpo.method.objective import group_advantages, zero_spread
from fedgrpo.method.prompting import completion_text
from fedgrpo.protocol import (
    Rejected,
    RewardItem,
    RewardReply,
    RewardRequest,
    check_item_count,
    check_method_counts,
    check_reward_item,
    new_request_id,
)
from fedgrpo.selection import Selector
from fedgrpo.server.canaries import Canaries
from fedgrpo.server.competence import expert_agreement
from fedgrpo.server.exchange import send
from fedgrpo.server.stats import RoundStats, note_privacy_spent
from fedgrpo.transport import Transport

log = logging.getLogger(__name__)

Received = dict[int, dict[str, list[float | None]]]  # group -> client -> accepted rewards


@dataclass(frozen=True)
class GroupRecord:
    """One question's round: its candidates, who was asked, and the (experts x G) rewards kept."""

    question: Question
    candidates: list[str]
    asked: list[str]
    experts: list[str]
    rewards: torch.Tensor


class FederatedAdvantage:
    """TRL reward function that asks the federation for rewards and returns advantages."""

    __name__ = "federated_advantage"  # TRL names reward functions by __name__

    def __init__(
        self,
        transport: Transport,
        selector: Selector,
        experts_per_question: int,
        num_generations: int,
        aggregation: Aggregation = "mean",
        online_update_rate: float = 0.1,
        format_reward: float = DEFAULT_FORMAT_REWARD,
        canaries: Canaries | None = None,
    ) -> None:
        """``format_reward``: added to each present reward of a well-formed candidate (the run's
        ``federation.format_reward``); a client's own rewards outside [0, 1] reject their item
        (``out_of_range``). ``canaries``: the hidden spot checks and reputation (None: off)."""
        self.transport = transport
        self.selector = selector
        self.m = experts_per_question
        self.g = num_generations
        self.aggregation = aggregation
        self.online_update_rate = online_update_rate
        self.format_reward = format_reward
        self.canaries = canaries
        self.total = RoundStats()  # whole run, checkpointed
        self.last_rewards: list[torch.Tensor] = []  # per question: (experts x G), for inspection
        self._pending = RoundStats()  # since the last drain()
        # What each group got, drained with the stats: a simulation audits it against labels it
        # holds (reward correctness, routing); this server-side object never sees labels.
        self._pending_groups: list[GroupRecord] = []
        self._round = 0
        self.privacy_spent: dict[str, tuple[float, float]] = {}  # client -> latest (epsilon, delta)

    def drain(self) -> tuple[RoundStats, list[GroupRecord]]:
        """The rounds since the last call (for one metrics row), and reset."""
        out = self._pending, self._pending_groups
        self._pending, self._pending_groups = RoundStats(), []
        return out

    # -- TRL hook ---------------------------------------------------------------------------------
    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        qid: list[str],
        question: list[str],
        domain: list[str] | None = None,
        **_: Any,
    ) -> list[float]:
        if len(completions) % self.g:
            raise ValueError(f"{len(completions)} completions is not a multiple of G={self.g}")
        questions, candidates = [], []
        for start in range(0, len(completions), self.g):
            ids = set(qid[start : start + self.g])
            if len(ids) != 1:
                raise ValueError(f"rows {start}..{start + self.g - 1} mix questions {sorted(ids)}")
            questions.append(Question(qid[start], (domain or [""] * len(qid))[start], question[start]))
            candidates.append([completion_text(c) for c in completions[start : start + self.g]])
        return [float(a) for group in self.advantages(questions, candidates) for a in group]

    # -- one round ----------------------------------------------------------------------------------
    def advantages(
        self, questions: Sequence[Question], candidates: Sequence[list[str]]
    ) -> list[torch.Tensor]:
        """Route, exchange, check, combine. Returns one advantage vector of length G per question."""
        start = time.perf_counter()
        stats = RoundStats(rounds=1)
        self._round += 1
        names = self.transport.client_names
        clients = names if self.canaries is None else self.canaries.trusted(names)
        m = self.m if len(clients) == len(names) else min(self.m, len(clients))  # fewer once excluded
        orders = self.selector.rank_questions(questions, clients)
        if orders is not None:
            routing = {qid: order[:m] for qid, order in orders.items()}
        else:
            routing = self.selector.select(questions, clients, m)
        if self.canaries is not None:
            routing = self.canaries.widen(routing, questions, clients, orders)
        canary = set() if self.canaries is None else self.canaries.groups(questions)
        stats.questions, stats.canaries = len(questions) - len(canary), len(canary)  # candidates: no canary's
        stats.candidates = sum(len(c) for j, c in enumerate(candidates) if j not in canary)
        experts = [list(routing[q.qid]) for q in questions]  # per group; groups may share a question
        received = self._exchange(stats, questions, candidates, experts)
        asked = [list(e) for e in experts]  # everyone asked: the first M, then any replacements
        if orders is not None:
            for j, extra in enumerate(self._replace(stats, questions, candidates, orders, experts, received)):
                asked[j].extend(extra)
        for j in range(len(questions)):
            (stats.canaries_asked if j in canary else stats.routed).update(asked[j])
        advantages, self.last_rewards = [], []
        for j in range(len(questions)):
            matrix = self._reward_matrix(experts[j], received[j], len(candidates[j]))
            if j in canary and self.canaries is not None:  # the server's answer checks it; not in the loss
                stats.canary_rewards += self.canaries.observe(
                    questions[j], candidates[j], experts[j], matrix, private=self.privacy_spent
                )
                adv = torch.zeros(len(candidates[j]), dtype=torch.float64)
            else:
                self._count_group(stats, matrix)
                adv = group_advantages(matrix, self.aggregation)
            stats.advantage_sq_sum += float((adv**2).sum())
            advantages.append(adv)
            self.last_rewards.append(matrix)
        self._online_update(stats, questions, experts)
        self._pending_groups += [
            GroupRecord(q, list(candidates[j]), asked[j], experts[j], self.last_rewards[j])
            for j, q in enumerate(questions)
            if j not in canary
        ]
        stats.excluded.update(self.canaries.end_round(self._round) if self.canaries is not None else [])
        stats.seconds = time.perf_counter() - start
        self._pending.merge(stats)
        self.total.merge(stats)
        return advantages

    def _replace(
        self,
        stats: RoundStats,
        questions: Sequence[Question],
        candidates: Sequence[list[str]],
        orders: dict[str, list[str]],
        experts: list[list[str]],
        received: Received,
    ) -> list[list[str]]:
        """Replace, once and in one extra exchange, each expert that gave no reward at all (it abstained,
        failed or was rejected) by the next most competent client not yet asked for that group.

        Updates ``experts`` and ``received`` in place; returns the replacements asked, per group.
        """
        extra: list[list[str]] = [[] for _ in questions]
        swaps: list[dict[str, str]] = [{} for _ in questions]
        for j, q in enumerate(questions):
            failed = [c for c in experts[j] if all(r is None for r in received[j].get(c, []))]
            spare = [c for c in orders[q.qid] if c not in experts[j]]
            for old, new in zip(failed, spare, strict=False):
                swaps[j][old] = new
                extra[j].append(new)
        if not any(extra):
            return extra
        stats.replacements += sum(len(e) for e in extra)
        got = self._exchange(stats, questions, candidates, extra)
        for j, swap in enumerate(swaps):
            for old, new in swap.items():
                log.info("question %s: %s gave no reward; asked %s instead", questions[j].qid, old, new)
                received[j].pop(old, None)
                if new in got.get(j, {}):
                    received[j][new] = got[j][new]
            experts[j] = [swap.get(c, c) for c in experts[j]]
        return extra

    def _online_update(
        self, stats: RoundStats, questions: Sequence[Question], experts: list[list[str]]
    ) -> None:
        """Tell the selector how well each expert agreed with the others (see :func:`expert_agreement`)."""
        for j, q in enumerate(questions):
            matrix = self.last_rewards[j]
            for e, client in enumerate(experts[j]):
                agreement = expert_agreement(matrix, e)
                if agreement is not None and self.selector.feedback(
                    q, client, agreement, self.online_update_rate
                ):
                    stats.online_updates += 1

    def _exchange(
        self,
        stats: RoundStats,
        questions: Sequence[Question],
        candidates: Sequence[list[str]],
        experts: Sequence[Sequence[str]],
    ) -> Received:
        """One batched request per chosen client; returns, per group, each client's accepted rewards.

        ``experts[j]`` are the clients asked about group ``j`` (empty: not asked in this exchange).
        """
        # Keys are a counter per request, mapped back to groups here (groups may share a question).
        item_keys: dict[str, dict[str, int]] = defaultdict(dict)
        for j in range(len(questions)):
            for client in dict.fromkeys(experts[j]):
                keys = item_keys[client]
                keys[str(len(keys))] = j
        requests = {
            client: RewardRequest(
                new_request_id(),  # random: a replacement's request looks like any other
                client,
                [RewardItem(key, questions[j].question, candidates[j]) for key, j in keys.items()],
            )
            for client, keys in item_keys.items()
        }
        exchanged = send(self.transport, requests, RewardReply)
        stats.record(exchanged)
        received: Received = defaultdict(dict)
        for client, reply in exchanged.replies.items():
            assert isinstance(reply, RewardReply)
            try:
                check_item_count(reply, len(item_keys[client]))
                counts = check_method_counts(reply)
            except Rejected as err:  # a reply with extra or miscounted items is not trusted at all
                self._rejected(stats, client, err)
                continue
            note_privacy_spent(self.privacy_spent, client, reply.privacy_spent)
            if reply.privacy_spent is not None:  # a private client hides how it scored (constant counts)
                stats.methods["hidden"] += len(reply.items)
            else:
                stats.methods.update({m: n for m, n in counts.items() if n})
                stats.abstentions += counts["none"]  # items the client cannot judge: not an error
            keys, seen = item_keys[client], set()
            for item in reply.items:
                j = keys.get(item.key)
                try:
                    expected = None if j is None else len(candidates[j])
                    rewards = check_reward_item(item, expected, seen)
                except Rejected as err:
                    self._rejected(stats, client, err)
                    continue
                assert j is not None
                if item.method is not None:  # only with federation.per_item_methods (debugging)
                    log.debug("%s scored question %s by %s", client, questions[j].qid, item.method)
                received[j][client] = [
                    None if r is None else reward_for(r, text, self.format_reward)
                    for r, text in zip(rewards, candidates[j], strict=True)
                ]
        return received

    @staticmethod
    def _rejected(stats: RoundStats, client: str, err: Rejected) -> None:
        stats.rejected[err.reason] += 1
        log.warning("rejected reply from %s (%s): %s", client, err.reason, err.detail)

    @staticmethod
    def _reward_matrix(experts: list[str], received: dict[str, list[float | None]], g: int) -> torch.Tensor:
        """(experts x G) rewards with NaN wherever an expert gave none or its reply was rejected."""
        matrix = torch.full((len(experts), g), float("nan"), dtype=torch.float64)
        for e, client in enumerate(experts):
            for i, r in enumerate(received.get(client, [])):
                if r is not None:
                    matrix[e, i] = r
        return matrix

    @staticmethod
    def _count_group(stats: RoundStats, matrix: torch.Tensor) -> None:
        got = int((~torch.isnan(matrix)).sum())
        stats.rewards_received += got
        stats.rewards_missing += matrix.numel() - got
        if got:
            stats.reward_sum += float(torch.nansum(matrix))
            stats.groups_scored += 1
            stats.groups_zero_spread += int(zero_spread(matrix))

    # -- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self._round,
            "selector": self.selector.state_dict(),
            "total": self.total.to_json(),
            "privacy_spent": {c: list(s) for c, s in self.privacy_spent.items()},
            "canaries": None if self.canaries is None else self.canaries.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._round = int(state["round"])
        self.privacy_spent = {c: (float(e), float(d)) for c, (e, d) in state.get("privacy_spent", {}).items()}
        self.selector.load_state_dict(state["selector"])
        self.total = RoundStats.from_json(state["total"])
        if self.canaries is not None and state.get("canaries") is not None:
            self.canaries.load_state_dict(state["canaries"])
