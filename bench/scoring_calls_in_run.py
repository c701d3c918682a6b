"""A real run's client model calls, timed one by one: ``fedgrpo run ARGS...`` in this process with
every ``ModelEvaluator._sample`` call timed, then how many calls answered one question, two, or a
competence chunk, their median and total seconds (the totals against the run's ``fed/seconds``, from
``bench/exchange_time.py``, show what the exchange spends outside the client models), and the torch
threads the calls ran with:

    python bench/scoring_calls_in_run.py default grpo.max_steps=8 eval.before=false eval.after=false
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict

import torch

import fedgrpo.client.model_scoring as model_scoring
from fedgrpo.cli import main as cli_main

CALLS: list[tuple[int, float]] = []  # (questions, seconds)
THREADS: set[int] = set()


def main() -> None:
    sample = model_scoring.ModelEvaluator._sample

    def timed(self, questions):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = sample(self, questions)
        CALLS.append((len(questions), time.perf_counter() - start))
        THREADS.add(torch.get_num_threads())
        return out

    model_scoring.ModelEvaluator._sample = timed  # type: ignore[method-assign]
    try:
        code = cli_main(["run", *sys.argv[1:]])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    by_size: dict[str, list[float]] = defaultdict(list)
    for n, seconds in CALLS:
        by_size[str(n) if n <= 2 else "competence chunk"].append(seconds)
    print("| questions a call | calls | median s | total s |")
    print("|---|---|---|---|")
    for size, values in sorted(by_size.items()):
        print(f"| {size} | {len(values)} | {statistics.median(values):.3f} | {sum(values):.2f} |")
    print(f"torch threads during the calls: {sorted(THREADS)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
