"""A real run's client model calls, timed one by one: ``fedgrpo run ARGS...`` in this process with
every ``ModelEvaluator._sample`` call timed, then how many calls answered one question, two, or a
competence chunk, their median and total seconds (the totals against the run's ``fed/seconds``, from
``bench/exchange_time.py``, show what the exchange spends outside the client models), the median
model forward after each call's first (the decode steps: ``bench/experiments/scoring_call.py`` times
the same alone), the median minor page faults a call, and the torch threads the calls ran with:

    python bench/scoring_calls_in_run.py default grpo.max_steps=8 eval.before=false eval.after=false
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections import defaultdict

import torch

import fedgrpo.client.model_scoring as model_scoring
from fedgrpo.cli import main as cli_main

CALLS: list[tuple[int, float, list[float], int]] = []  # (questions, seconds, forwards' s, minor faults)
THREADS: set[int] = set()


def main() -> None:
    sample = model_scoring.ModelEvaluator._sample

    def timed(self, questions):  # noqa: ANN001, ANN202
        net = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        forward, forwards = net.forward, []

        def timed_forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            begin = time.perf_counter()
            out = forward(*args, **kwargs)
            forwards.append(time.perf_counter() - begin)
            return out

        net.forward = timed_forward
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        try:
            out = sample(self, questions)
        finally:
            del net.forward
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        CALLS.append((len(questions), seconds, forwards[1:], faults))
        THREADS.add(torch.get_num_threads())
        return out

    model_scoring.ModelEvaluator._sample = timed  # type: ignore[method-assign]
    try:
        code = cli_main(["run", *sys.argv[1:]])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    by_size: dict[str, list[tuple[float, list[float], int]]] = defaultdict(list)
    for n, *call in CALLS:
        by_size[str(n) if n <= 2 else "competence chunk"].append(call)
    print("| questions a call | calls | median s | total s | median forward ms | minor faults a call |")
    print("|---|---|---|---|---|---|")
    for size, calls in sorted(by_size.items()):
        seconds = [c[0] for c in calls]
        forward = statistics.median([f for c in calls for f in c[1]] or [float("nan")]) * 1e3
        faults = statistics.median(c[2] for c in calls)
        print(
            f"| {size} | {len(calls)} | {statistics.median(seconds):.3f} | {sum(seconds):.2f} "
            f"| {forward:.1f} | {faults:.0f} |"
        )
    print(f"torch threads during the calls: {sorted(THREADS)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
