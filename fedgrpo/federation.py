"""The server's side of the federation: route candidates to experts, collect and check their rewards.

:class:`FederatedRewards` is a TRL reward function. TRL calls it with every completion of a generation
batch (each prompt repeated G times in a row); it picks experts per question with the selector,
sends one batched request per client through the transport, rejects bad replies (counted and
logged), and returns the federated group-relative advantage of each candidate (see
:mod:`fedgrpo.objective`). TRL is configured with ``scale_rewards="none"`` and a single reward
function, so the advantage TRL uses is exactly the value returned here (TRL subtracts the group
mean, which is already zero).

With a selector that can rank (the confidence graph), the first M clients per question are asked;
an expert that returns no reward at all is replaced once, in one extra exchange, by the next most
competent client not yet asked, and after the round each expert's graph edges near the question move
towards its agreement with the other experts (online update).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from fedgrpo.data import Question
from fedgrpo.objective import group_advantages, zero_spread
from fedgrpo.prompting import completion_text
from fedgrpo.selection import Selector
from fedgrpo.transport import (
    Delivery,
    ErrorReply,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    Transport,
    decode,
    encode,
)

log = logging.getLogger(__name__)


@dataclass
class RoundStats:
    """What one or more reward rounds cost and produced; drained into the per-step metrics."""

    rounds: int = 0
    questions: int = 0
    candidates: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    bytes_down_per_client: Counter = field(default_factory=Counter)
    bytes_up_per_client: Counter = field(default_factory=Counter)
    experts_asked: int = 0
    rewards_received: int = 0
    rewards_missing: int = 0
    abstentions: int = 0
    methods: Counter = field(default_factory=Counter)  # evaluations by method: answer / model / none
    groups_scored: int = 0
    groups_zero_spread: int = 0
    reward_sum: float = 0.0
    advantage_sq_sum: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    routed: Counter = field(default_factory=Counter)  # client -> questions routed to it
    replacements: int = 0
    online_updates: int = 0
    timed_out: Counter = field(default_factory=Counter)  # client -> requests it did not answer in time

    def merge(self, other: RoundStats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update(value)
            else:
                setattr(self, name, mine + value)

    def summary(self) -> dict[str, Any]:
        scored = max(self.rewards_received, 1)
        return {
            "fed/rounds": self.rounds,
            "fed/questions": self.questions,
            "fed/reward_mean": self.reward_sum / scored if self.rewards_received else None,
            "fed/advantage_std": math.sqrt(self.advantage_sq_sum / max(self.candidates, 1)),
            "fed/groups_scored": self.groups_scored,
            "fed/zero_spread_share": self.groups_zero_spread / max(self.groups_scored, 1),
            "fed/unscored_share": 1 - self.groups_scored / max(self.questions, 1),
            "fed/rewards_received": self.rewards_received,
            "fed/rewards_missing": self.rewards_missing,
            "fed/abstentions": self.abstentions,
            "fed/methods": dict(sorted(self.methods.items())),
            "fed/bytes_down": self.bytes_down,
            "fed/bytes_up": self.bytes_up,
            "fed/bytes_down_per_round": round(self.bytes_down / max(self.rounds, 1)),
            "fed/bytes_up_per_round": round(self.bytes_up / max(self.rounds, 1)),
            "fed/bytes_down_per_client": dict(sorted(self.bytes_down_per_client.items())),
            "fed/bytes_up_per_client": dict(sorted(self.bytes_up_per_client.items())),
            "fed/rejected": dict(sorted(self.rejected.items())),
            "fed/rejected_total": sum(self.rejected.values()),
            "fed/seconds": round(self.seconds, 3),
            "fed/routed": dict(sorted(self.routed.items())),
            "fed/replacements": self.replacements,
            "fed/online_updates": self.online_updates,
            "fed/timed_out": dict(sorted(self.timed_out.items())),
        }


def expert_agreement(matrix: torch.Tensor, e: int) -> float | None:
    """Share of candidates where expert ``e``'s binarised reward (>= 0.5) equals the majority of the
    other experts' binarised rewards. Candidates that ``e`` did not score, that no other expert
    scored, or where the others tie are skipped; None when nothing is left to compare."""
    present = ~torch.isnan(matrix)
    bits = matrix >= 0.5
    others = torch.ones(matrix.shape[0], dtype=torch.bool)
    others[e] = False
    n = present[others].sum(dim=0)
    k = (bits & present)[others].sum(dim=0)
    valid = present[e] & (n > 0) & (2 * k != n)
    if not valid.any():
        return None
    return float((bits[e] == (2 * k > n))[valid].float().mean())


@dataclass(frozen=True)
class GroupRecord:
    """One question's round: its candidates, who was asked, and the (experts x G) rewards kept."""

    question: Question
    candidates: list[str]
    asked: list[str]
    experts: list[str]
    rewards: torch.Tensor


class FederatedRewards:
    """TRL reward function that asks the federation for rewards and returns advantages."""

    __name__ = "federated_advantage"  # TRL names reward functions by __name__

    def __init__(
        self,
        transport: Transport,
        selector: Selector,
        experts_per_question: int,
        num_generations: int,
        aggregation: Literal["mean", "pooled"] = "mean",
        online_update_rate: float = 0.1,
    ) -> None:
        self.transport = transport
        self.selector = selector
        self.m = experts_per_question
        self.g = num_generations
        self.aggregation = aggregation
        self.online_update_rate = online_update_rate
        self.pending = RoundStats()  # drained by the metrics callback
        self.total = RoundStats()  # whole run, checkpointed
        self._round = 0
        self.last_rewards: list[torch.Tensor] = []  # per question: (experts x G), for inspection
        # What each group got, drained with `pending`; the run audits it against labels it holds
        # for evaluation (reward correctness, routing), which this server-side object never sees.
        self.pending_groups: list[GroupRecord] = []

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
        advantages = self.score(questions, candidates)
        return [float(a) for group in advantages for a in group]

    # -- one round ----------------------------------------------------------------------------------
    def score(self, questions: Sequence[Question], candidates: Sequence[list[str]]) -> list[torch.Tensor]:
        """Route, exchange, validate, combine. Returns one advantage vector of length G per question."""
        start = time.perf_counter()
        stats = RoundStats(rounds=1, questions=len(questions), candidates=sum(len(c) for c in candidates))
        self._round += 1
        clients = self.transport.client_names
        orders = self.selector.rank_questions(questions, clients)
        if orders is not None:
            routing = {qid: order[: self.m] for qid, order in orders.items()}
        else:
            routing = self.selector.select(questions, clients, self.m)
        experts = [list(routing[q.qid]) for q in questions]  # per group; groups may share a question
        received = self._exchange(stats, questions, candidates, experts, "")
        asked = [list(e) for e in experts]  # everyone asked: the first M, then any replacements
        if orders is not None:
            for j, extra in enumerate(self._replace(stats, questions, candidates, orders, experts, received)):
                asked[j].extend(extra)
        for j in range(len(questions)):
            stats.routed.update(asked[j])
        advantages, self.last_rewards = [], []
        for j in range(len(questions)):
            matrix = self._reward_matrix(experts[j], received[j], len(candidates[j]))
            self._count_group(stats, matrix)
            adv = group_advantages(matrix, self.aggregation)
            stats.advantage_sq_sum += float((adv**2).sum())
            advantages.append(adv)
            self.last_rewards.append(matrix)
        self._online_update(stats, questions, experts)
        self.pending_groups += [
            GroupRecord(q, list(candidates[j]), asked[j], experts[j], self.last_rewards[j])
            for j, q in enumerate(questions)
        ]
        stats.seconds = time.perf_counter() - start
        self.pending.merge(stats)
        self.total.merge(stats)
        return advantages

    def _replace(
        self,
        stats: RoundStats,
        questions: Sequence[Question],
        candidates: Sequence[list[str]],
        orders: dict[str, list[str]],
        experts: list[list[str]],
        received: dict[int, dict[str, list[float | None]]],
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
        got = self._exchange(stats, questions, candidates, extra, "-replacement")
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
        tag: str,
    ) -> dict[int, dict[str, list[float | None]]]:
        """One batched request per chosen client; returns, per group, each client's accepted rewards.

        ``experts[j]`` are the clients asked about group ``j`` (empty: not asked in this exchange).
        """
        # Several groups in one batch may share a question; items are keyed by group position too.
        item_keys: dict[str, dict[str, int]] = defaultdict(dict)
        for j, q in enumerate(questions):
            for client in experts[j]:
                item_keys[client][f"{j}:{q.qid}"] = j
        if not item_keys:
            return defaultdict(dict)
        request_ids = {client: f"r{self._round}{tag}-{client}" for client in item_keys}
        requests = {
            client: encode(
                RewardRequest(
                    request_ids[client],
                    client,
                    [RewardItem(key, questions[j].question, candidates[j]) for key, j in keys.items()],
                )
            )
            for client, keys in item_keys.items()
        }
        stats.experts_asked += sum(len(keys) for keys in item_keys.values())
        received: dict[int, dict[str, list[float | None]]] = defaultdict(dict)
        for client, delivery in self.transport.exchange(requests).items():
            stats.bytes_down += delivery.bytes_down
            stats.bytes_up += delivery.bytes_up
            stats.bytes_down_per_client[client] += delivery.bytes_down
            stats.bytes_up_per_client[client] += delivery.bytes_up
            if client not in item_keys:
                self._reject(stats, "unasked_client", client, "reply from a client that was not asked")
                continue
            for j, rewards in self._accept(
                stats, client, request_ids[client], delivery, item_keys[client], candidates
            ):
                received[j][client] = rewards
        return received

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

    def _accept(
        self,
        stats: RoundStats,
        client: str,
        request_id: str,
        delivery: Delivery,
        expected: dict[str, int],
        candidates: Sequence[list[str]],
    ) -> list[tuple[int, list[float | None]]]:
        """The items of one client's reply that pass every check; each failure is counted and logged."""
        if delivery.timed_out:  # missing for this round; replaced below where the selector can rank
            stats.timed_out[client] += 1
            self._reject(stats, "timeout", client, delivery.error or "no reply in time")
            return []
        if delivery.error is not None or delivery.reply is None:
            self._reject(stats, "client_failed", client, delivery.error or "no reply")
            return []
        try:
            reply = decode(delivery.reply)
        except ProtocolError as err:
            self._reject(stats, "malformed_reply", client, str(err))
            return []
        if isinstance(reply, ErrorReply):
            self._reject(stats, "client_error", client, reply.error)
            return []
        if not isinstance(reply, RewardReply):
            self._reject(stats, "malformed_reply", client, f"expected a reward reply, got {reply.kind!r}")
            return []
        if reply.client != client or reply.request_id != request_id:
            self._reject(
                stats,
                "unasked_client",
                client,
                f"reply names client {reply.client!r} / request {reply.request_id!r}",
            )
            return []
        accepted, seen = [], set()
        for item in reply.items:
            key = item.qid
            j = expected.get(key)
            if j is None or key in seen:
                self._reject(stats, "unknown_question", client, f"reply for unknown or repeated item {key!r}")
                continue
            seen.add(key)
            if len(item.rewards) != len(candidates[j]):
                self._reject(
                    stats,
                    "wrong_length",
                    client,
                    f"{len(item.rewards)} rewards for {len(candidates[j])} candidates",
                )
                continue
            if any(r is not None and not math.isfinite(r) for r in item.rewards):
                self._reject(stats, "non_finite", client, f"NaN or infinite reward for {key!r}")
                continue
            stats.methods[item.method] += 1
            if item.method == "none":
                stats.abstentions += 1  # the client does not hold the question: not an error
            accepted.append((j, item.rewards))
        return accepted

    @staticmethod
    def _reject(stats: RoundStats, reason: str, client: str, detail: str) -> None:
        stats.rejected[reason] += 1
        log.warning("rejected reply from %s (%s): %s", client, reason, detail)

    # -- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self._round,
            "selector": self.selector.state_dict(),
            "total": _stats_to_json(self.total),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._round = int(state["round"])
        self.selector.load_state_dict(state["selector"])
        self.total = _stats_from_json(state["total"])


def _stats_to_json(stats: RoundStats) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(stats).items()}


def _stats_from_json(data: dict[str, Any]) -> RoundStats:
    stats = RoundStats()
    for k, v in data.items():
        setattr(stats, k, Counter(v) if isinstance(getattr(stats, k), Counter) else v)
    return stats
