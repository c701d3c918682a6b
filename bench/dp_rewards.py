"""Differentially private rewards: what a probing server learns, and what the noise costs the rewards.

``probe``: a client holds N labelled questions of ``sums_1digit`` (answers -9..18). A curious server
enumerates every possible answer of every question as a candidate, asks each R times, and guesses
the label as the answer with the highest mean reward (ties at random). Counted: labels recovered,
against a client without privacy, with privacy but without the cache (averaging works), with the
cache (repeats are worthless), with the cache and a per-question answer budget, and with the cache
and a run budget. Exact numbers, seconds of CPU.

``correctness``: the default domains' seeded split (answer-based clients, every client asked), G=8
fixed candidates per training question (half right, all tagged), sent through the real clients and
:class:`FederatedAdvantage` at each epsilon. Reported: the share of rewards whose correctness part
(the server's reward minus the format reward it added, >= 0.5) is right, and the share of
candidates whose advantage has the sign of their correctness.

``train``: short SmolLM2 training runs (answer-based clients, every client asked) at each epsilon; the
held-out accuracy after training. Takes minutes per epsilon on a CPU.

    python bench/dp_rewards.py probe
    python bench/dp_rewards.py correctness
    python bench/dp_rewards.py train --steps 6
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

from fedgrpo.client import Client
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease
from fedgrpo.config import load_config
from fedgrpo.data import generate
from fedgrpo.protocol import RewardItem, RewardReply, RewardRequest
from fedgrpo.selection.base import AllSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport

EPSILONS = [None, 8.0, 4.0, 2.0, 1.0]  # None: no differential privacy
FMT = 0.1


def _label_guess(means: dict[int, float], rng: random.Random) -> int | None:
    if not means:
        return None
    best = max(means.values())
    return rng.choice(sorted(a for a, m in means.items() if m == best))


def probe_once(privacy: PrivateRelease | None, questions: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """One probing attack; returns labels recovered and what the client spent."""
    examples = generate("sums_1digit", questions, seed)
    client = Client("org", examples, privacy=privacy)  # correctness only, as the server reads it
    answers = list(range(-9, 19))  # every answer a sum or difference of two digits can have
    # all repeats in one request: the client composes its spend once, the attack is the same
    items = [
        RewardItem(f"{r}:{k}:{a}", ex.question, [f"<answer>{a}</answer>"])
        for r in range(repeats)
        for k, ex in enumerate(examples)
        for a in answers
    ]
    reply = client.respond(RewardRequest("probe", "org", items))
    assert isinstance(reply, RewardReply)
    totals: dict[tuple[int, int], list[float]] = {}
    for item in reply.items:
        if item.rewards[0] is not None:
            _, k, a = map(int, item.key.split(":"))
            totals.setdefault((k, a), []).append(item.rewards[0])
    rng = random.Random(seed)
    recovered = 0
    for k, ex in enumerate(examples):
        means = {a: sum(v) / len(v) for (q, a), v in totals.items() if q == k}
        recovered += int(_label_guess(means, rng) == int(ex.answer))
    spent = privacy.spent()[0] if privacy is not None else math.inf
    return {"recovered": recovered, "of": questions, "epsilon_spent": round(spent, 2)}


def probe(args: argparse.Namespace) -> dict[str, Any]:
    n, r, space = args.questions, args.repeats, 28
    rows: dict[str, Any] = {"no privacy": probe_once(None, n, r)}
    for eps in (4.0, 2.0, 1.0):

        def release(
            budget: float | None = None, answers: int = space, remember: bool = True, eps: float = eps
        ) -> PrivateRelease:
            policy = PrivacyPolicy(eps, budget, 1e-5, max_answers_per_question=answers)
            return PrivateRelease(policy, seed=1, remember=remember)

        rows[f"eps={eps:g}"] = {
            "no cache, no budget": probe_once(release(remember=False), n, r),
            "cache, 1 query": probe_once(release(), n, 1),
            f"cache, {r} queries": probe_once(release(), n, r),
            "cache + 4 answers/question": probe_once(release(answers=4), n, r),
            "cache + per-example budget eps=8": probe_once(release(budget=8.0), n, r),
        }
    rows["random guess"] = round(n / space, 1)
    return {"questions": n, "answers_enumerated": space, "repeats": r, "rows": rows}


def correctness(args: argparse.Namespace) -> dict[str, Any]:
    over = ["clients.model=null", "clients.expert.method=none", "federation.selector=all"]
    rows = {}
    for eps in EPSILONS:
        private = [] if eps is None else ["clients.privacy.enabled=true", f"clients.privacy.epsilon={eps}"]
        cfg = load_config("default", [*over, *private, "clients.privacy.budget_epsilon=null"])
        split = build_data(cfg)
        transport = InProcessTransport(build_clients(cfg, split))
        g = 8
        rng = random.Random(0)
        examples = split.train_examples[: args.questions]
        truth = [[rng.random() < 0.5 for _ in range(g)] for _ in examples]
        candidates = [
            [f"<answer>{ex.answer if ok else int(ex.answer) + 1 + rng.randrange(5)}</answer>" for ok in row]
            for ex, row in zip(examples, truth, strict=True)
        ]
        advantage = FederatedAdvantage(
            transport, AllSelector(), len(transport.client_names), g, format_reward=FMT
        )
        questions = split.train_questions[: args.questions]
        start = time.perf_counter()
        advantages = advantage.advantages(questions, candidates)
        agree = total = signs = signed = 0
        for matrix, adv, ok in zip(advantage.last_rewards, advantages, truth, strict=True):
            for row in matrix:
                for r, correct in zip(row.tolist(), ok, strict=True):
                    if not math.isnan(r):
                        total += 1
                        agree += int((r - FMT >= 0.5) == correct)
            for a, correct in zip(adv.tolist(), ok, strict=True):
                if a != 0:
                    signed += 1
                    signs += int((a > 0) == correct)
        rows["inf" if eps is None else f"{eps:g}"] = {
            "reward_correctness": round(agree / max(total, 1), 3),
            "advantage_sign_right": round(signs / max(signed, 1), 3),
            "rewards": total,
            "epsilon_spent_max": round(max((e for e, _ in advantage.privacy_spent.values()), default=0.0), 1),
            "seconds": round(time.perf_counter() - start, 1),
        }
    return {"questions": args.questions, "G": 8, "rows": rows}


def train(args: argparse.Namespace) -> dict[str, Any]:
    from fedgrpo.simulation.in_process import run_in_process

    rows = {}
    for i, eps in enumerate(args.epsilons):
        private = [] if eps is None else ["clients.privacy.enabled=true", f"clients.privacy.epsilon={eps}"]
        name = "inf" if eps is None else f"{eps:g}"
        over = [
            "clients.model=null",
            "clients.expert.method=none",
            "federation.selector=all",  # every client asked: the holder always answers, through its noise
            f"grpo.max_steps={args.steps}",
            f"eval.max_per_domain={args.heldout}",
            f"eval.before={'true' if i == 0 else 'false'}",
            "clients.privacy.budget_epsilon=null",
            f"run.output_dir={args.out}/eps-{name}",
            *private,
        ]
        results = run_in_process(load_config("default", over))
        after = results["after"]
        rows[name] = {
            "after": {d: v["accuracy"] for d, v in after.items()},
            "before": {d: v["accuracy"] for d, v in (results["before"] or {}).items()} or None,
            "reward_correctness": results["communication"].get("fed/reward_correctness"),
            "epsilon_spent": results["privacy"],
            "train_seconds": results["train_seconds"],
        }
        print(json.dumps({name: rows[name]}), flush=True)
    return {"steps": args.steps, "heldout_per_domain": args.heldout, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--repeats", type=int, default=20)
    c = sub.add_parser("correctness")
    c.add_argument("--questions", type=int, default=60)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--heldout", type=int, default=40, help="held-out questions per domain")
    t.add_argument("--out", type=Path, default=Path("runs/dp"))
    t.add_argument(
        "--epsilons",
        type=lambda v: [None if e == "inf" else float(e) for e in v.split(",")],
        default=EPSILONS,
        help="comma-separated, inf for no DP (default: inf,8,4,2,1)",
    )
    args = parser.parse_args()
    report = {"probe": probe, "correctness": correctness, "train": train}[args.what](args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
