"""Seconds to route questions through the confidence graph (paper's Module 1) at federation scale.

A random graph with E=100 exemplars (d=576, SmolLM2's hidden size) and K=1000 clients; 10,000 random
questions routed to M=2 experts via ``competence`` + ``torch.topk``, full preference orders via
``rank_indices`` (tensor) and via ``rank`` (Python lists of names, on a 1,000-question sample since it
materialises all K names per question). Median of 5 runs each, one JSON line per measurement.

    python bench/routing_speed.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from fedgrpo.selection import ConfidenceGraph


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (allocator, BLAS threads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exemplars", type=int, default=100)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--rank-sample", type=int, default=1000)
    parser.add_argument("--neighbours", type=int, default=20)
    parser.add_argument("-m", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(args.exemplars, args.dim, generator=gen)
    corr = (torch.rand(args.clients, args.exemplars, generator=gen) < 0.5).float()
    graph = ConfidenceGraph(emb, corr, [f"client-{k}" for k in range(args.clients)], args.neighbours)
    questions = torch.randn(args.questions, args.dim, generator=gen)
    sample = questions[: args.rank_sample]

    common = {
        "E": args.exemplars,
        "d": args.dim,
        "K": args.clients,
        "L": graph.neighbours,
        "M": args.m,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats,
    }
    cases: list[tuple[str, int, Callable[[], object]]] = [
        ("competence+topk", args.questions, lambda: torch.topk(graph.competence(questions), args.m, dim=1)),
        ("rank_indices", args.questions, lambda: graph.rank_indices(questions)),
        ("rank_indices_eps0.1", args.questions, lambda: graph.rank_indices(questions, epsilon=0.1, rng=gen)),
        ("rank", args.rank_sample, lambda: graph.rank(sample)),
    ]
    for name, n, fn in cases:
        median, times = median_seconds(fn, args.repeats)
        row = {"case": name, "N": n, "seconds_median": round(median, 5)}
        print(json.dumps(row | {"seconds": [round(t, 5) for t in times]} | common), flush=True)


if __name__ == "__main__":
    main()
