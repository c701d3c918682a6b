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

Seconds of CPU, no model:

    python bench/hidden_membership.py
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
G = 8


def measure(epsilon: float | None, questions: int) -> dict[str, Any]:
    private = (
        [] if epsilon is None else ["clients.privacy.enabled=true", f"clients.privacy.epsilon={epsilon}"]
    )
    over = ["clients.model=null", "clients.expert.method=none", "federation.selector=all"]
    over.append("clients.privacy.budget_epsilon=null")
    cfg = load_config("default", [*over, *private])
    split = build_data(cfg)
    clients = build_clients(cfg, split)
    holds = {c.name: {normalise_question(ex.question) for ex in split.clients[c.name]} for c in clients}
    rng = random.Random(0)
    examples = split.train_examples[:questions]
    truth = [[rng.random() < 0.5 for _ in range(G)] for _ in examples]
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
    sums = [[0.0] * G for _ in examples]
    counts = [[0] * G for _ in examples]
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
    return {
        "holder_correct": round(holder[0] / max(holder[1], 1), 3),
        "released_correct": round(released[0] / max(released[1], 1), 3),
        "mean_correct": round(mean_right / (len(examples) * G), 3),
        "values_received": released[1],
        "holder_values": holder[1],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=60, help="at most the split's 60 training questions")
    args = parser.parse_args()
    rows = {"inf" if e is None else f"{e:g}": measure(e, args.questions) for e in EPSILONS}
    print(json.dumps({"questions": args.questions, "G": G, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
