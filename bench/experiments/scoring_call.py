"""Where one model-scoring call goes (one question a call, ``clients.samples`` answers, the default
expert ``client-0``, its kept answers off): seconds per call, and the model forwards inside it, the
first of which reads the part of the prompt no kept prompt start holds. ``--merged`` merges the
adapter into the base once, before the calls (a merged copy per client, kept: what that would save;
fp32 weights only). Further arguments override the config (``clients.weights=fp32``):

    python bench/experiments/scoring_call.py --calls 20 [--merged] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # bench/, for the maintained benches it reuses
from client_scoring import _evaluators  # noqa: E402

from fedgrpo.accel import prompt_cache  # noqa: E402
from fedgrpo.accel.few_rows import activate  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.simulation.data import build_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--merged", action="store_true", help="merge the adapter once, before the calls")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. clients.weights=fp32")
    args = parser.parse_args()
    cfg = load_config("default", args.overrides)
    if args.merged and cfg.clients.weights != "fp32":
        parser.error("--merged merges into fp32 weights: add clients.weights=fp32")
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    split = build_data(cfg)
    ev = _evaluators(cfg, split)[0]
    ev.cache_size = 0
    if args.merged:
        activate(ev.model, ev.adapter)
        ev.model.merge_adapter()
    questions = [q.question for q in split.train_questions[: args.calls + 3]]
    times: dict[str, list[float]] = {"prompt read (ours)": [], "model forward": []}

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        def call(*a, **k):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            out = fn(*a, **k)
            times[name].append(time.perf_counter() - start)
            return out

        return call

    prompt_cache.prefill = timed("prompt read (ours)", prompt_cache.prefill)
    base = ev.model.get_base_model() if hasattr(ev.model, "get_base_model") else ev.model
    base.forward = timed("model forward", base.forward)
    for q in questions[:3]:  # warm: the first call reads its whole prompt start
        ev._sample([q])
    for values in times.values():
        values.clear()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for q in questions[3:]:
        ev._sample([q])
    per_call = (time.perf_counter() - start) / args.calls
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.calls
    print(f"{per_call:.3f} s per call ({ev.samples} answers), {faults:.0f} minor page faults a call")
    for name, values in times.items():
        count, median = len(values) / args.calls, statistics.median(values) * 1e3
        total = sum(values) / args.calls * 1e3
        print(f"{name}: {count:.2f} per call, median {median:.1f} ms, {total:.1f} ms a call")


if __name__ == "__main__":
    main()
