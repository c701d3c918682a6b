"""Poisoned experts: how each aggregation orders right above wrong candidates with one liar among five.

Exact and cheap, no training: fixed synthetic candidates (G=8 per question, 1 to 3 right, the rest
wrong answers or untagged) for N arithmetic questions go through real clients behind the in-process
transport and the real ``FederatedAdvantage``, K=5 clients, M=3 experts per question, in rounds of 2
questions as in training. Every client holds every question (answer-based scoring), so three experts
judge each candidate; honest experts are either exact or noisy (each holds a wrong label, the
nearest wrong answer, for a share of questions, independently). One client (two for colluding) lies
as ``clients.adversaries`` makes it. Routing: random M of K, or the confidence graph (SmolLM2
embeddings, 30 auxiliary exemplars, L=5, every client starting fully competent: the liar passed the
competence queries) with its online updates.

Reported per setting: the share of questions whose advantages put every right candidate above every
wrong one (95% Wilson interval over questions; also split by how many liars were among the
question's experts), the share of right-wrong pairs ordered right, the mean advantage gap between
right and wrong candidates (how much learning signal is left; per-expert z keep an honest run's
gap independent of M), and
for the graph the liar's share of the expert slots (first and last third of the rounds) and its
final competence (mean edge weight; honest clients start at 1).

    python bench/poisoning.py --questions 150 --out runs/poisoning.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from fedgrpo.client.factory import make_client
from fedgrpo.config import load_config
from fedgrpo.data import Example, Question, generate
from fedgrpo.method.answers import is_correct
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.evaluate import wilson_interval
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector, mean_pooled_embedder
from fedgrpo.selection.base import RandomSelector, Selector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.simulation.clients import adversary
from fedgrpo.transport import InProcessTransport

DOMAINS = ("sums_1digit", "sums_2digit", "products")
K, M, G, PER_ROUND = 5, 3, 8, 2
NAMES = [f"client-{k}" for k in range(K)]
SCENARIOS: dict[str, dict[str, str]] = {
    "clean": {},
    "flip": {"client-0": "flip"},
    "always-high": {"client-0": "always-high"},
    "random": {"client-0": "random"},
    "colluding (2 of 5)": {"client-0": "colluding", "client-1": "colluding"},
}
AGGREGATIONS = ("mean", "median", "trimmed-mean")


def candidates_for(example: Example, rng: random.Random) -> list[str]:
    """1 to 7 right tagged answers (uniform: early and late training alike); the rest wrong (near misses),
    one of them untagged."""
    gold = int(example.answer)
    right = rng.randint(1, G - 1)
    wrong = [gold + rng.choice((1, -1, 2, -2, 10)) for _ in range(G - right)]
    texts = [f"<answer>{gold}</answer>"] * right + [f"<answer>{w}</answer>" for w in wrong]
    texts[-1] = f"I think it is {wrong[-1]}."
    rng.shuffle(texts)
    return texts


def noisy_labels(examples: list[Example], noise: float, rng: random.Random) -> list[Example]:
    """A client's copy of the questions with a wrong label (gold + 1) on a ``noise`` share of them."""
    out = []
    for ex in examples:
        wrong = rng.random() < noise
        out.append(Example(ex.qid, ex.domain, ex.question, str(int(ex.answer) + 1)) if wrong else ex)
    return out


def run_setting(
    examples: list[Example],
    candidates: list[list[str]],
    holdings: dict[str, list[Example]],
    adversaries: dict[str, str],
    aggregation: str,
    selector: Selector,
    seed: int,
) -> dict[str, Any]:
    text = "{" + ", ".join(f"{c}: {b}" for c, b in adversaries.items()) + "}"
    overrides = ["data.num_clients=5", f"federation.experts_per_question={M}", f"clients.adversaries={text}"]
    cfg = load_config("smoke", [*overrides, f"seed={seed}"])
    clients = [make_client(cfg, c, holdings[c], None, adversary(cfg, c)) for c in NAMES]
    fed = FederatedAdvantage(InProcessTransport(clients), selector, M, G, aggregation)  # type: ignore[arg-type]
    liars = sorted(adversaries) or ["client-0"]  # clean: follow client-0 for comparison
    ordered = pairs_right = pairs = 0
    gap = 0.0
    by_liars: dict[int, list[int]] = {}  # liars among a group's experts -> [ordered, groups]
    liar_slots: list[int] = []
    liar_competence: list[float] = []  # after each round, with the graph
    for start in range(0, len(examples), PER_ROUND):
        batch = examples[start : start + PER_ROUND]
        qs = [Question(ex.qid, ex.domain, ex.question) for ex in batch]
        before = sum(fed.total.routed[c] for c in liars)
        advs = fed.advantages(qs, candidates[start : start + PER_ROUND])
        liar_slots.append(sum(fed.total.routed[c] for c in liars) - before)
        _, records = fed.drain()
        competence = selector.competences()
        if competence is not None:
            liar_competence.append(min(competence[c] for c in liars))
        for ex, cands, adv, record in zip(
            batch, candidates[start : start + PER_ROUND], advs, records, strict=True
        ):
            truth = [is_correct(ex, t) for t in cands]
            right = [float(a) for a, ok in zip(adv, truth, strict=True) if ok]
            wrong = [float(a) for a, ok in zip(adv, truth, strict=True) if not ok]
            gap += sum(right) / len(right) - sum(wrong) / len(wrong)
            good = int(min(right) > max(wrong))
            ordered += good
            tally = by_liars.setdefault(sum(c in adversaries for c in record.experts), [0, 0])
            tally[0] += good
            tally[1] += 1
            pairs_right += sum(r > w for r in right for w in wrong)
            pairs += len(right) * len(wrong)
    n = len(examples)
    third = max(len(liar_slots) // 3, 1)
    slots_per_round = M * PER_ROUND * len(liars)
    out: dict[str, Any] = {
        "ordered": round(ordered / n, 3),
        "ordered_ci95": [round(x, 3) for x in wilson_interval(ordered, n)],
        "pairs_right": round(pairs_right / pairs, 3),
        "gap": round(gap / n, 3),
        "ordered_by_liars_in_group": {
            n: [round(good / total, 3), total] for n, (good, total) in sorted(by_liars.items())
        },
        "liar_share_first_third": round(sum(liar_slots[:third]) / (third * slots_per_round), 3),
        "liar_share_last_third": round(sum(liar_slots[-third:]) / (third * slots_per_round), 3),
        "rejected": sum(fed.total.rejected.values()),
    }
    competence = selector.competences()
    if competence is not None:
        ends = [third - 1, 2 * third - 1, len(liar_competence) - 1]
        out["liar_competence_by_third"] = [round(liar_competence[i], 3) for i in ends]
        out["liar_competence"] = round(min(competence[c] for c in liars), 3)
        out["honest_competence_min"] = round(min(v for c, v in competence.items() if c not in liars), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--noise", type=float, default=0.2, help="share of wrong labels of a noisy expert")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/poisoning.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    per = args.questions // len(DOMAINS)
    examples = [ex for d in DOMAINS for ex in generate(d, per, seed=args.seed)]
    random.Random(args.seed).shuffle(examples)
    rng = random.Random(args.seed + 1)
    candidates = [candidates_for(ex, rng) for ex in examples]
    auxiliary = [ex for d in DOMAINS for ex in generate(d, 10, seed=args.seed + 100)]

    tokenizer = load_tokenizer("smollm2")
    embed_model = mean_pooled_embedder(load_policy("smollm2").requires_grad_(False), tokenizer)
    texts = [ex.question for ex in examples]
    cache = dict(zip(texts, embed_model(texts), strict=True))
    aux_embeddings = embed_model([ex.question for ex in auxiliary])

    def embed(batch: list[str]) -> torch.Tensor:
        return torch.stack([cache[t] for t in batch])

    regimes = {
        "exact": {c: list(examples) for c in NAMES},
        f"noisy ({args.noise:g} wrong labels)": {
            c: noisy_labels(examples, args.noise, random.Random(f"{args.seed}-{c}")) for c in NAMES
        },
    }
    report: dict[str, Any] = {
        "questions": len(examples),
        "K": K,
        "M": M,
        "G": G,
        "right_per_question": sum(
            is_correct(ex, t) for ex, c in zip(examples, candidates, strict=True) for t in c
        )
        / len(examples),
        "results": {},
    }
    for regime, holdings in regimes.items():
        for scenario, adversaries in SCENARIOS.items():
            for aggregation in AGGREGATIONS:
                for routing in ("random", "confidence-graph"):
                    if routing == "random":
                        selector: Selector = RandomSelector(args.seed)
                    else:
                        graph = ConfidenceGraph(aux_embeddings, torch.ones(K, len(auxiliary)), NAMES, 5)
                        selector = ConfidenceGraphSelector(graph, embed, seed=args.seed)
                    res = run_setting(
                        examples, candidates, holdings, adversaries, aggregation, selector, args.seed
                    )
                    key = f"{regime} | {scenario} | {aggregation} | {routing}"
                    report["results"][key] = res
                    print(key, res, flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    main()
