"""What hidden membership costs the rewards: model-free clients that answer every item.

The default preset's seeded split (5 answer-only clients, each training question held by one of
them), G=8 fixed candidates per question (each right with probability 1/2, all tagged), every client
asked about every question through :meth:`Client.respond`, at each epsilon (no per-example cap, so
only the noise is measured). Without privacy a client abstains where it does not hold the question;
with privacy it sends a fair coin there instead (hidden membership). Reported:

* ``holder_correct``: the share of the holders' values equal to the true correctness;
* ``released_correct``: the share of all values the server receives equal to it (with privacy the
  strangers' coins are among them);
* ``mean_correct``: the share of candidates whose mean over the values received is on the right side
  of 0.5 (ties count half): a server that cannot tell the holder from the others averages them all.

``--budgets`` measures the per-example budget instead (issue 25): each row is a per-value epsilon
and a per-example budget (``suites/privacy.yaml``'s runs, and the same budget of 4 spent on more or
fewer answer checks), at G=4 (the suite's) and G=8 (the default preset's). A candidate's wrong answer
is one of five, so a question has up to six distinct answers; an answer check past its example's
budget is a fair coin. Each row adds the largest per-example epsilon the clients' ledgers composed,
and how many distinct (question, answer) checks were real (``answer_checks``) and how many were
past their example's budget (``over_budget``, sent as coins).

Seconds of CPU, no model:

    python bench/hidden_membership.py
    python bench/hidden_membership.py --budgets
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from fedgrpo.config import load_config
from fedgrpo.data import normalise_question
from fedgrpo.protocol import RewardItem, RewardReply, RewardRequest
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data

EPSILONS = [None, 8.0, 4.0, 2.0, 1.0]  # None: no differential privacy
# (epsilon per value, per-example budget): the privacy suite's runs, then a budget of 4 spent otherwise
BUDGETS = [(None, None), (2.0, 8.0), (1.0, 4.0), (1.0, 2.0), (1.0, 1.0), (0.5, 4.0), (2.0, 4.0), (4.0, 4.0)]
G = 8


def measure(epsilon: float | None, questions: int, budget: float | None = None, g: int = G) -> dict[str, Any]:
    private = (
        [] if epsilon is None else ["clients.privacy.enabled=true", f"clients.privacy.epsilon={epsilon}"]
    )
    over = ["clients.model=null", "clients.expert.method=none", "federation.selector=all"]
    over.append(f"clients.privacy.budget_epsilon={'null' if budget is None else budget}")
    cfg = load_config("default", [*over, *private])
    split = build_data(cfg)
    clients = build_clients(cfg, split)
    holds = {c.name: {normalise_question(ex.question) for ex in split.clients[c.name]} for c in clients}
    rng = random.Random(0)
    examples = split.train_examples[:questions]
    truth = [[rng.random() < 0.5 for _ in range(g)] for _ in examples]
    candidates = [
        [f"<answer>{ex.answer if ok else int(ex.answer) + 1 + rng.randrange(5)}</answer>" for ok in row]
        for ex, row in zip(examples, truth, strict=True)
    ]
    items = [
        RewardItem(str(k), ex.question, cands)
        for k, (ex, cands) in enumerate(zip(examples, candidates, strict=True))
    ]
    holder = [0, 0]  # right, total
    released = [0, 0]
    sums = [[0.0] * g for _ in examples]
    counts = [[0] * g for _ in examples]
    start = time.perf_counter()
    for client in clients:
        reply = client.respond(RewardRequest("r", client.name, items))
        assert isinstance(reply, RewardReply)
        for k, item in enumerate(reply.items):
            held = normalise_question(examples[k].question) in holds[client.name]
            for j, (value, correct) in enumerate(zip(item.rewards, truth[k], strict=True)):
                if value is None:
                    continue
                right = int((value >= 0.5) == correct)
                released[0] += right
                released[1] += 1
                if held:
                    holder[0] += right
                    holder[1] += 1
                sums[k][j] += value
                counts[k][j] += 1
    mean_right = 0.0
    for k, row in enumerate(truth):
        for j, correct in enumerate(row):
            mean = sums[k][j] / counts[k][j] if counts[k][j] else 0.5
            mean_right += 0.5 if mean == 0.5 else float((mean > 0.5) == correct)
    row: dict[str, Any] = {
        "holder_correct": round(holder[0] / max(holder[1], 1), 3),
        "released_correct": round(released[0] / max(released[1], 1), 3),
        "mean_correct": round(mean_right / (len(examples) * g), 3),
        "values_received": released[1],
        "holder_values": holder[1],
    }
    ledgers = [c.privacy for c in clients if c.privacy is not None]
    if ledgers:
        checks = sum(sum(r["answer_checks"] for r in p.ledger.runs.values()) for p in ledgers)
        over = sum(p.stats.over_privacy_budget for p in ledgers)
        row["per_example_epsilon_max"] = max(p.report()["per_example_epsilon_max"] for p in ledgers)
        row["answer_checks"], row["over_budget"] = checks, over  # distinct answers: checked, coin
    return {**row, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=60, help="at most the split's 60 training questions")
    parser.add_argument("--budgets", action="store_true", help="per-example budgets (issue 25) instead")
    args = parser.parse_args()
    if not args.budgets:
        rows = {"inf" if e is None else f"{e:g}": measure(e, args.questions) for e in EPSILONS}
        print(json.dumps({"questions": args.questions, "G": G, "rows": rows}, indent=2))
        return
    out = {
        f"G={g}": {
            "none" if e is None else f"eps {e:g}, budget {b:g}": measure(e, args.questions, b, g)
            for e, b in BUDGETS
        }
        for g in (4, 8)
    }
    print(json.dumps({"questions": args.questions, "rows": out}, indent=2))


if __name__ == "__main__":
    main()
