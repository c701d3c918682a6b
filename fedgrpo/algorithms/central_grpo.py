"""``central-grpo``: the upper reference. The clients' labelled data pooled on the server, GRPO with the
ground-truth reward computed there.

Same split, seed, held-out set, GRPO settings, trainer, checkpoints and metrics as FedGRPO; only the
reward differs: one "expert" that knows every answer (the clients' own reward, correctness plus the
format reward), turned into advantages by the same objective as the federation's
(:func:`fedgrpo.method.objective.group_advantages`), so the comparison isolates who scores, not how.
Communication: the pooled data is uploaded once, counted as ``bytes_up`` (each client's labelled file,
as ``fedgrpo example-data`` would write it); nothing is sent down during training.
"""

from __future__ import annotations

from typing import Any

import torch

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import Example, Question, labelled_jsonl
from fedgrpo.method.answers import is_correct, reward_for
from fedgrpo.method.objective import group_advantages, zero_spread
from fedgrpo.method.prompting import completion_text
from fedgrpo.run.assemble import ServerData
from fedgrpo.run.experiment import evaluate_before, load_server_model, train_and_evaluate, write_results
from fedgrpo.server import GroupRecord
from fedgrpo.server.stats import RoundStats
from fedgrpo.simulation.data import build_data, split_summary
from fedgrpo.simulation.partition import FederatedSplit
from fedgrpo.storage.run_folder import check_output_dir, in_run_folder, start_run


class GroundTruthReward:
    """TRL's reward function for the central baseline: the true reward of each candidate, returned as
    group-relative advantages (a :class:`~fedgrpo.run.trl.TrainingReward`)."""

    __name__ = "ground_truth_advantage"

    def __init__(self, examples: list[Example], num_generations: int, format_reward: float) -> None:
        self.by_qid = {ex.qid: ex for ex in examples}
        self.g = num_generations
        self.format_reward = format_reward
        self.total = RoundStats()
        self._pending = RoundStats()

    def __call__(self, prompts: list[Any], completions: list[Any], qid: list[str], **_: Any) -> list[float]:
        stats = RoundStats(rounds=1, questions=len(completions) // self.g, candidates=len(completions))
        out: list[float] = []
        for start in range(0, len(completions), self.g):
            example = self.by_qid[qid[start]]
            texts = [completion_text(c) for c in completions[start : start + self.g]]
            rewards = torch.tensor(
                [[reward_for(float(is_correct(example, t)), t, self.format_reward) for t in texts]]
            )
            adv = group_advantages(rewards)
            stats.rewards_received += len(texts)
            stats.reward_sum += float(rewards.sum())
            stats.groups_scored += 1
            stats.groups_zero_spread += int(zero_spread(rewards))
            stats.advantage_sq_sum += float((adv**2).sum())
            out += [float(a) for a in adv]
        self._pending.merge(stats)
        self.total.merge(stats)
        return out

    def drain(self) -> tuple[RoundStats, list[GroupRecord]]:
        out, self._pending = self._pending, RoundStats()
        return out, []

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_json()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = RoundStats.from_json(state["total"])


def pooled_upload(split: FederatedSplit) -> RoundStats:
    """The one-off cost of pooling: every client uploads its labelled file once."""
    stats = RoundStats()
    for client, examples in split.clients.items():
        size = len(labelled_jsonl(examples).encode()) if examples else 0
        stats.bytes_up += size
        stats.bytes_up_per_client[client] += size
    return stats


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    check_output_dir(cfg, resume)
    split = build_data(cfg)
    return in_run_folder(cfg, resume, lambda: _run(cfg, split, resume))


def _run(cfg: FedGRPOConfig, split: FederatedSplit, resume: bool) -> dict[str, Any]:
    split_info = split_summary(split)
    start_run(cfg, resume, split_info)
    pooled = [ex for examples in split.clients.values() for ex in examples]
    data = ServerData([Question(ex.qid, ex.domain, ex.question) for ex in pooled], [], split.heldout)
    reward = GroundTruthReward(pooled, cfg.num_generations, cfg.federation.format_reward)
    reward.total.merge(pooled_upload(split))
    tokenizer, model = load_server_model(cfg)
    before = evaluate_before(cfg, model, tokenizer, data.heldout, resume)
    results = train_and_evaluate(cfg, model, tokenizer, data, reward, resume, None, before)
    results.update(split=split_info, pooled_examples=len(pooled))
    write_results(cfg, results)
    return results
