"""The reward exchange's time in real runs, from their ``metrics.jsonl``: seconds per step spent in
routing, the clients' scoring and the checks (``fed/seconds``; in process, the client models'
generation is nearly all of it), and per model-scored item (``fed/methods``):

    python bench/exchange_time.py runs/default /tmp/plain-run
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path


def summary(folder: Path) -> tuple[int, float, float, Counter]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "fed/seconds" in r]
    methods: Counter = Counter()
    for r in rows:
        methods.update(r.get("fed/methods", {}))
    seconds = [r["fed/seconds"] for r in rows]
    return len(rows), statistics.mean(seconds), sum(seconds), methods


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.jsonl)")
    args = parser.parse_args()
    print("| run | steps | fed/seconds per step | model-scored items | answer-checked | s per model item |")
    print("|---|---|---|---|---|---|")
    for folder in args.runs:
        steps, mean, total, methods = summary(folder)
        model = methods.get("model", 0)
        per_item = f"{total / model:.3f}" if model else "-"
        print(f"| {folder} | {steps} | {mean:.2f} | {model} | {methods.get('answer', 0)} | {per_item} |")


if __name__ == "__main__":
    main()
