"""Hidden spot checks (canaries) and reputation, model-free: who is excluded, how fast, at what cost.

Exact and cheap, no training, no model: K=5 real clients behind the in-process transport and the real
``FederatedAdvantage`` with its ``Canaries``, M=3 experts per question (random routing), rounds of 2
questions with G=8 synthetic candidates as in ``bench/poisoning.py``. Each training question is held by
one client (scored by its answer there); every other item, canaries always, is scored by the client's
*simulated model*: it answers a question right with its accuracy (0.5, 0.3, 0.2, 0.1, 0.05: weak
honest experts included, as SmolLM2's are: 0.03 to 0.27 on the competence queries), otherwise wrong
(``--errors``: spread over -10..10, or always one of the candidates' own near misses), then gives 1
to the candidates that agree with its answer (the agreement rule of ``fedgrpo.client.agreement``).
Liars are ``clients.adversaries``' behaviours over that honest client.

Per setting (canary share, scenario), over seeds: the round each liar is excluded (None: never), the
liars' share of the training expert slots in rounds 1-10 and from round 11 on, honest clients excluded
(false positives), the share of training questions whose advantages order every right candidate
above every wrong one, and bytes down per round.

    python bench/canaries.py --rounds 60 --seeds 5 --out runs/canaries.json
    python bench/canaries.py --rounds 40 --seeds 5 --shares 0.5 --margin 0.15 --fanout 2 \
        --min-questions 5 --out runs/canaries.json

(the second: the consistency tests against each client's competence-query accuracy, every canary also
asked of 2 more clients; ``--right-share 0.05``: a weak policy, most canaries with no right candidate).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator, Evaluation
from fedgrpo.client.agreement import agreement_rewards
from fedgrpo.config import load_config
from fedgrpo.data import Example, Question, generate
from fedgrpo.method.answers import is_correct
from fedgrpo.protocol import CompetenceItem, CompetenceRequest
from fedgrpo.selection import RandomSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.server.canaries import Canaries
from fedgrpo.server.reputation import Reputation
from fedgrpo.simulation.adversaries import AdversarialEvaluator
from fedgrpo.transport import InProcessTransport

DOMAINS = ("sums_1digit", "sums_2digit", "products")
K, M, G, PER_ROUND = 5, 3, 8, 2
NAMES = [f"client-{k}" for k in range(K)]
ACCURACY = (0.5, 0.3, 0.2, 0.1, 0.05)  # each client model's, by default (--accuracy)
SCENARIOS: dict[str, dict[str, str]] = {
    "clean": {},
    "colluding (2 of 5)": {"client-0": "colluding", "client-1": "colluding"},
    "flip + random + always-high": {"client-0": "flip", "client-2": "random", "client-4": "always-high"},
    "aux-aware": {"client-0": "aux-aware"},
}
NEAR = (1, -1, 2, -2, 10)


SPREAD = tuple(d for d in range(-10, 11) if d)  # a model's own mistakes, by default


@dataclass(frozen=True)
class Setting:
    share: float  # canary share of the prompts
    adversaries: dict[str, str]
    rounds: int
    seed: int
    threshold: float
    aux_domains: tuple[str, ...] = DOMAINS  # where the auxiliary set and the canaries come from
    errors: tuple[int, ...] = SPREAD  # a client model's mistakes (NEAR: the candidates' own)
    accuracy: tuple[float, ...] = ACCURACY
    margin: float | None = None  # consistency test against the competence queries (None: threshold)
    fanout: int = 0  # canaries also asked of this many clients beyond M
    min_questions: int = 10
    right_share: float | None = None  # a policy whose candidates are each right with this probability
    one_answer: bool = False  # the one-answer test (the product's with agreement scoring)


class SimulatedModel:
    """A client model that is right with probability ``accuracy`` (per question, seeded), else wrong by
    one of ``errors`` (SPREAD: any of -10..10, so its mistakes meet the candidates' near misses now and
    then; NEAR: always one of the candidates' own near misses, the worst case for a weak honest
    expert); it scores candidates by agreement with its own answer, like a real client model."""

    def __init__(self, answers: dict[str, str], accuracy: float, seed: str, errors: tuple[int, ...]) -> None:
        self._answers, self._accuracy, self._seed, self._errors = answers, accuracy, seed, errors

    def answer(self, question: str) -> str | None:
        rng = random.Random(f"{self._seed}|{question}")
        gold = int(self._answers[question])
        return str(gold if rng.random() < self._accuracy else gold + rng.choice(self._errors))

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        reference = self.answer(question)
        return Evaluation(agreement_rewards(reference or "", candidates), "model")


def answers_of(examples: list[Example]) -> dict[str, str]:
    return {ex.question: ex.answer for ex in examples}


def candidates_for(example: Example, rng: random.Random, right_share: float | None = None) -> list[str]:
    """1 to 7 right tagged answers (``right_share``: each candidate right with that probability, so
    often none, as with a weak policy); the rest near misses, one of them untagged (as
    bench/poisoning.py)."""
    gold = int(example.answer)
    right = (
        rng.randint(1, G - 1) if right_share is None else sum(rng.random() < right_share for _ in range(G))
    )
    texts = [f"<answer>{gold}</answer>"] * right + [
        f"<answer>{gold + rng.choice(NEAR)}</answer>" for _ in range(G - right)
    ]
    texts[-1] = f"I think it is {gold + 1}."
    rng.shuffle(texts)
    return texts


def build(
    train: list[Example],
    canaries: list[Example],
    auxiliary: list[Example],
    setting: Setting,
) -> list[Client]:
    answers = {ex.question: ex.answer for ex in [*train, *canaries, *auxiliary]}
    holdings = {c: train[k::K] for k, c in enumerate(NAMES)}  # each training question held by one client
    clients = []
    for k, c in enumerate(NAMES):
        honest = DualEvaluator(
            AnswerEvaluator(holdings[c]),
            SimulatedModel(answers, setting.accuracy[k], f"{setting.seed}-{c}", setting.errors),
        )
        behaviour = setting.adversaries.get(c)
        evaluator = AdversarialEvaluator(honest, behaviour, setting.seed, c) if behaviour else honest  # type: ignore[arg-type]
        clients.append(Client(c, holdings[c], evaluator))
    request = CompetenceRequest(
        "aux", "server", [CompetenceItem(str(k), ex.question, ex.answer) for k, ex in enumerate(auxiliary)]
    )
    for client in clients:  # the competence query: the only labelled questions a client sees from the server
        client.respond(request)
    return clients


def run_setting(setting: Setting) -> dict[str, Any]:
    share, adversaries, rounds, seed = setting.share, setting.adversaries, setting.rounds, setting.seed
    rng = random.Random(seed)
    n_train = rounds * PER_ROUND
    train = [ex for d in DOMAINS for ex in generate(d, n_train // len(DOMAINS) + 1, seed=seed)][:n_train]
    rng.shuffle(train)
    pool = [ex for d in setting.aux_domains for ex in generate(d, 150, seed=seed + 1000)]
    seen = {ex.question for ex in train}
    pool = [ex for ex in pool if ex.question not in seen]
    rng.shuffle(pool)
    auxiliary, canary_pool = pool[:30], pool[30:]
    clients = build(train, canary_pool, auxiliary, setting)
    expected = {  # each client's accuracy on the competence queries (every liar answers them honestly)
        c: sum(
            SimulatedModel(answers_of(pool), setting.accuracy[k], f"{seed}-{c}", setting.errors).answer(
                ex.question
            )
            == ex.answer
            for ex in auxiliary
        )
        / len(auxiliary)
        for k, c in enumerate(NAMES)
    }
    reputation = Reputation(setting.threshold, 0.95, setting.min_questions, setting.margin, expected)
    checks = Canaries(
        canary_pool, reputation, 0.1, fanout=setting.fanout, seed=seed, one_answer=setting.one_answer
    )
    fed = FederatedAdvantage(InProcessTransport(clients), RandomSelector(seed), M, G, "mean", canaries=checks)
    liars = sorted(adversaries)
    slots: list[tuple[int, int]] = []  # per round: (liar slots, all training slots)
    ordered = groups = 0
    next_train = next_canary = 0
    start = time.perf_counter()
    for _ in range(rounds):
        if len(checks.trusted(NAMES)) < M:  # too few left to route to (counted as the end of the run)
            break
        batch: list[Example] = []
        for _ in range(PER_ROUND):  # each prompt is a canary with probability `share`
            if rng.random() < share:
                batch.append(canary_pool[next_canary])
                next_canary += 1
            else:
                batch.append(train[next_train])
                next_train += 1
        cands = [candidates_for(ex, rng, setting.right_share) for ex in batch]
        before = dict(fed.total.routed)
        advs = fed.advantages([Question(ex.qid, ex.domain, ex.question) for ex in batch], cands)
        routed = {c: fed.total.routed[c] - before.get(c, 0) for c in NAMES}
        slots.append((sum(routed[c] for c in liars), sum(routed.values())))
        for ex, cand, adv in zip(batch, cands, advs, strict=True):
            if checks.is_canary(Question(ex.qid, ex.domain, ex.question)):
                assert not adv.any()  # canary rewards never reach the loss
                continue
            truth = [is_correct(ex, t) for t in cand]
            right = [float(a) for a, ok in zip(adv, truth, strict=True) if ok]
            wrong = [float(a) for a, ok in zip(adv, truth, strict=True) if not ok]
            if right and wrong:  # a one-sided group orders nothing
                groups += 1
                ordered += int(min(right) > max(wrong))
    seconds = time.perf_counter() - start
    report = reputation.report()["clients"]
    excluded = {c: t["excluded_at"] for c, t in report.items() if t["excluded_at"] is not None}

    def share_of(rows: list[tuple[int, int]]) -> float | None:
        total = sum(b for _, b in rows)
        return round(sum(a for a, _ in rows) / total, 3) if total else None

    return {
        "liar_excluded_at": {c: excluded.get(c) for c in liars},
        "honest_excluded": sorted(c for c in excluded if c not in adversaries),
        "liar_share_rounds_1_10": share_of(slots[:10]) if liars else None,
        "liar_share_after_10": share_of(slots[10:]) if liars else None,
        "ordered": round(ordered / max(groups, 1), 3),
        "rounds_run": len(slots),
        "canaries": fed.total.canaries,
        "canary_questions": {c: t["questions"] for c, t in report.items()},
        "honesty": {c: [t["honesty"], *t["interval"]] for c, t in report.items()},
        "bytes_down_per_round": round(fed.total.bytes_down / rounds),
        "bytes_up_per_round": round(fed.total.bytes_up / rounds),
        "client_items_per_round": round(
            (sum(fed.total.routed.values()) + sum(fed.total.canaries_asked.values())) / rounds, 2
        ),
        "server_ms_per_round": round(1000 * seconds / rounds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5])
    parser.add_argument(
        "--threshold", type=float, default=load_config("default").federation.canaries.threshold
    )
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument(
        "--errors",
        choices=("spread", "near"),
        default="spread",
        help="a client model's mistakes: spread over -10..10, or always the candidates' own near misses",
    )
    parser.add_argument("--accuracy", type=float, nargs=K, default=list(ACCURACY), help="each client model's")
    parser.add_argument(
        "--margin", type=float, default=None, help="consistency test: honesty held to competence less this"
    )
    parser.add_argument("--fanout", type=int, default=0, help="canaries asked of this many beyond M")
    parser.add_argument("--min-questions", type=int, default=10)
    parser.add_argument(
        "--right-share",
        type=float,
        default=None,
        help="a weak policy: each candidate right with this probability (default: 1 to 7 of 8 right)",
    )
    parser.add_argument(
        "--one-answer",
        action="store_true",
        help="the one-answer test too (on in a run whose clients score by agreement, the default)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/canaries.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    results: dict[str, Any] = {}
    errors = SPREAD if args.errors == "spread" else NEAR
    accuracy = tuple(args.accuracy)
    named = [(f"share {s:g} | {n}", s, n, DOMAINS) for s in args.shares for n in args.scenarios]
    if "aux-aware" in args.scenarios:  # canaries (and auxiliary) that look unlike the training questions
        named += [
            (f"share {s:g} | aux-aware | aux+canaries: products only", s, "aux-aware", ("products",))
            for s in args.shares
            if s
        ]
    for key, share, name, aux_domains in named:
        runs = [
            run_setting(
                Setting(
                    share,
                    SCENARIOS[name],
                    args.rounds,
                    seed,
                    args.threshold,
                    aux_domains,
                    errors,
                    accuracy,
                    args.margin,
                    args.fanout,
                    args.min_questions,
                    args.right_share,
                    args.one_answer,
                )
            )
            for seed in range(args.seeds)
        ]
        results[key] = runs
        print(key, json.dumps(summary(runs)), flush=True)
    report = {
        "K": K,
        "M": M,
        "G": G,
        "per_round": PER_ROUND,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "threshold": args.threshold,
        "margin": args.margin,
        "fanout": args.fanout,
        "min_questions": args.min_questions,
        "right_share": args.right_share,
        "one_answer": args.one_answer,
        "errors": args.errors,
        "accuracy": args.accuracy,
        "summary": {k: summary(v) for k, v in results.items()},
        "runs": results,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['seconds']} s")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: liars' exclusion rounds, false positives, slot shares, ordering, cost."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(sum(values) / len(values), 3) if values else None

    return {
        "liar_excluded_at": [sorted(r["liar_excluded_at"].items()) for r in runs],
        "honest_excluded_runs": sum(bool(r["honest_excluded"]) for r in runs),
        "liar_share_rounds_1_10": mean("liar_share_rounds_1_10"),
        "liar_share_after_10": mean("liar_share_after_10"),
        "ordered": mean("ordered"),
        "bytes_down_per_round": mean("bytes_down_per_round"),
        "client_items_per_round": mean("client_items_per_round"),
        "server_ms_per_round": mean("server_ms_per_round"),
    }


if __name__ == "__main__":
    main()
