"""Flower transport overhead against in-process on the same job, and memory for many virtual clients.

Runs ``fedgrpo run smoke`` (tiny model, eval off) in subprocesses: once in-process and once on the
Simulation Engine, same seed and steps, and reports per-step and per-round (reward exchange) time,
messages and bytes per round, start-up time, and the peak resident memory of the whole process tree
(driver plus Ray workers) for 10 and 50 virtual clients.

    flock /tmp/fedgrpo-cpu.lock .venv/bin/python bench/flower_overhead.py --steps 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    # Ray's workers are started by its raylet, which is a child of the driver: all counted above.
    return total / 2**20


def run(out: Path, overrides: list[str]) -> dict:
    cmd = [
        str(BIN / "fedgrpo"),
        "run",
        "smoke",
        f"run.output_dir={out}",
        "eval.before=false",
        "eval.after=false",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, *overrides],
        stdout=subprocess.DEVNULL,
        stderr=(out.parent / f"{out.name}.log").open("w"),
        env={**os.environ, "FEDGRPO_LOG": "INFO"},
    )
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{cmd} {overrides} failed; see {out.parent / (out.name + '.log')}")
    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    comm, transport = results["communication"], results.get("transport", {})
    rounds = max(comm["fed/rounds"], 1)
    steady = rows[1:] or rows  # the first step also warms up (first ClientApp calls, compilation)
    counts = transport.get("counts", {})
    return {
        "wall_s": round(wall, 1),
        "startup_s": round(wall - results["train_seconds"], 1),
        "join_s": transport.get("startup_seconds"),
        "step_s": round(sum(r["seconds"] for r in steady) / len(steady), 3),
        "round_s": round(sum(r["fed/seconds"] for r in steady) / len(steady), 4),
        "messages_per_round": round(counts.get("messages_sent", 0) / rounds, 2) if counts else None,
        "protocol_bytes_per_round": round((comm["fed/bytes_down"] + comm["fed/bytes_up"]) / rounds),
        "record_bytes_per_round": (
            round((counts.get("record_bytes_down", 0) + counts.get("record_bytes_up", 0)) / rounds)
            if counts
            else None
        ),
        "peak_rss_mb": round(peak[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--clients", type=int, nargs="*", default=[10, 50])
    args = parser.parse_args()
    sim = ["federation.transport=flower-simulation", "flower.ray_cpus=2"]
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        same = [f"grpo.max_steps={args.steps}"]
        report["in_process"] = run(root / "inproc", same)
        report["simulation"] = run(root / "sim", [*same, *sim])
        a, b = report["in_process"], report["simulation"]
        report["step_ratio"] = round(b["step_s"] / a["step_s"], 3)
        report["round_overhead_s"] = round(b["round_s"] - a["round_s"], 4)
        for k in args.clients:
            data = [f"data.num_clients={k}", "data.examples_per_client=4", "grpo.max_steps=2"]
            report[f"in_process_{k}_clients"] = run(root / f"inproc{k}", data)
            report[f"simulation_{k}_clients"] = run(root / f"sim{k}", [*data, *sim])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
