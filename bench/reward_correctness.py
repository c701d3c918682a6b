"""Reward correctness of each selector on the same candidates: what routing buys, measured directly.

Takes a finished confidence-graph run folder (its config, its saved graph, the clients' cached
experts) and, without training, asks every client once to score G sampled candidates of the base
policy for N training questions, through the real protocol. A client's scores of a question do not
depend on who else was asked (model-based evaluation is seeded per question), so every selector is
then judged on the same (question, client) scores: the share of expert rewards that agree with the
candidate's true correctness (reward >= 0.5 vs exact match), with 95% Wilson intervals, per domain,
and the share of truly right candidates that got a reward >= 0.5.

    python bench/reward_correctness.py runs/default-no-gt --questions 60
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from fedgrpo.config import load_config
from fedgrpo.method.answers import is_correct
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.protocol import RewardItem, RewardReply, RewardRequest
from fedgrpo.run.evaluate import generate_completions, wilson_interval
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector, OracleSelector, mean_pooled_embedder
from fedgrpo.selection.base import AllSelector, RandomSelector
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5, help="random-selector draws averaged")
    args = parser.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.seed)
    split = build_data(cfg)
    examples = split.train_examples[: args.questions]
    questions = split.train_questions[: args.questions]
    g, m = cfg.num_generations, cfg.federation.experts_per_question

    tokenizer = load_tokenizer(cfg.model.name_or_path)
    policy = load_policy(cfg.model.name_or_path)
    repeated = [q.question for q in questions for _ in range(g)]
    texts = generate_completions(
        policy,
        tokenizer,
        repeated,
        int(cfg.grpo.get("max_completion_length", 64)),
        32,
        cfg.model.worked_example,
        "candidates",
        temperature=float(cfg.grpo.get("temperature", 1.0)),
    )
    candidates = [texts[i * g : (i + 1) * g] for i in range(len(questions))]
    truth = [[is_correct(ex, t) for t in cands] for ex, cands in zip(examples, candidates, strict=True)]

    transport = InProcessTransport(build_clients(cfg, split))
    clients = transport.client_names
    # keyed by qid here: a benchmark of its own, it maps replies back by the key it chose
    items = [RewardItem(q.qid, q.question, c) for q, c in zip(questions, candidates, strict=True)]
    start = time.perf_counter()
    deliveries = transport.exchange({c: RewardRequest(f"all-{c}", c, items) for c in clients})
    seconds = time.perf_counter() - start
    scores: dict[tuple[str, str], list[float | None]] = {}
    for c, delivery in deliveries.items():
        reply = delivery.reply
        assert isinstance(reply, RewardReply), reply
        for item in reply.items:
            scores[(item.key, c)] = item.rewards

    graph = ConfidenceGraph.load(args.run_dir / "confidence_graph.pt")
    embed = mean_pooled_embedder(load_policy(cfg.model.name_or_path).requires_grad_(False), tokenizer)
    selectors = {
        "confidence-graph": [ConfidenceGraphSelector(graph, embed, 0.0, seed=cfg.seed)],
        "random": [RandomSelector(seed) for seed in range(args.seeds)],
        "all": [AllSelector()],
        "oracle (domain labels)": [OracleSelector({c: split.client_domains[c] for c in clients})],
    }
    report = {
        "questions": len(questions),
        "G": g,
        "M": m,
        "candidate_accuracy": _share(truth),
        "client_seconds_per_question": round(seconds / (len(questions) * len(clients)), 2),
        "selectors": {},
    }
    for name, draws in selectors.items():
        agree, total = defaultdict(int), defaultdict(int)
        right_total = right_rewarded = 0
        for selector in draws:
            routed = selector.select(questions, clients, m)
            for q, ok in zip(questions, truth, strict=True):
                for c in routed[q.qid]:
                    for r, correct in zip(scores[(q.qid, c)], ok, strict=True):
                        if r is None or math.isnan(r):
                            continue
                        for key in ("all", q.domain):
                            total[key] += 1
                            agree[key] += int((r >= 0.5) == correct)
                        # Most candidates are wrong, so "always wrong" already agrees often; how
                        # often a right candidate is rewarded shows whether the expert can tell.
                        if correct:
                            right_total += 1
                            right_rewarded += int(r >= 0.5)
        report["selectors"][name] = {
            key: {
                "reward_correctness": round(agree[key] / total[key], 3),
                "ci95": [round(x, 3) for x in wilson_interval(agree[key], total[key])],
                "rewards": total[key] // len(draws),
            }
            for key in total
        }
        report["selectors"][name]["right_candidates_rewarded"] = (
            round(right_rewarded / right_total, 3) if right_total else None
        )
    print(json.dumps(report, indent=2))


def _share(truth: list[list[bool]]) -> float:
    flat = [x for row in truth for x in row]
    return round(sum(flat) / max(len(flat), 1), 3)


if __name__ == "__main__":
    main()
