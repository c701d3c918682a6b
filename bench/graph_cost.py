"""What building the confidence graph once cost a run, against the paper's per-question re-query.

FedGRPO builds the graph once per run: every client answers every auxiliary question once (K x E
questions answered, ``samples`` generations each). The paper instead re-queries, for each training
question, every client on the question's L nearest exemplars (K x L per question). This reads a
finished run folder (``results.json``, ``config.yaml``, ``metrics.jsonl``), takes the build's
measured cost, and prices the re-query for the same run with the same protocol: messages are
encoded for real (a CompetenceRequest of L of the run's auxiliary questions per client per training
question, and its reply), and client time is the build's measured seconds per question answered.

    python bench/graph_cost.py runs/default
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from fedgrpo.config import load_config
from fedgrpo.protocol import CompetenceItem, CompetenceReply, CompetenceRequest, encode
from fedgrpo.simulation.data import build_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    results = json.loads((args.run_dir / "results.json").read_text())
    sel = results["selection"]
    if not sel:
        raise SystemExit(f"{args.run_dir} did not use the confidence graph")
    cfg = load_config(args.run_dir / "config.yaml")
    rows = [json.loads(x) for x in (args.run_dir / "metrics.jsonl").read_text().splitlines() if x]
    questions = sum(r["fed/questions"] for r in rows)
    k, e, lnn = sel["clients"], sel["exemplars"], sel["neighbours"]
    samples = cfg.clients.samples
    answered_build = k * e
    client_seconds_per_answer = sel["seconds"] / answered_build  # clients answer one after another here

    auxiliary = build_data(cfg).auxiliary
    rng = random.Random(0)
    down = up = 0
    for q in range(questions):
        for c in range(k):
            picked = rng.sample(auxiliary, lnn)
            items = [CompetenceItem(str(i), x.question, x.answer) for i, x in enumerate(picked)]
            down += len(encode(CompetenceRequest(f"requery-{q}-{c}", f"client-{c}", items)))
            up += len(encode(CompetenceReply(f"requery-{q}-{c}", f"client-{c}", [1] * lnn)))
    answered_requery = questions * k * lnn
    report = {
        "run": str(args.run_dir),
        "K": k,
        "E_auxiliary": e,
        "L": lnn,
        "samples": samples,
        "training_questions_routed": questions,
        "build_once": {
            "questions_answered": answered_build,
            "generations": answered_build * samples,
            "messages": 2 * k,
            "bytes_down": sel["bytes_down"],
            "bytes_up": sel["bytes_up"],
            "seconds_measured": sel["seconds"],
        },
        "requery_per_question": {
            "questions_answered": answered_requery,
            "generations": answered_requery * samples,
            "messages": 2 * k * questions,
            "bytes_down": down,
            "bytes_up": up,
            "seconds_estimated": round(answered_requery * client_seconds_per_answer, 1),
        },
        "ratio_requery_over_build": {
            "generations": round(answered_requery / answered_build, 2),
            "bytes": round((down + up) / (sel["bytes_down"] + sel["bytes_up"]), 2),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
