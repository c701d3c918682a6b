"""Helpers shared by the tests: the CLI in a real subprocess, metric rows, a hand-computed objective."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

EPS = 1e-4  # the objective's epsilon, restated here so the hand calculation does not import it


def fedgrpo(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m fedgrpo.cli ARGS`` in a real subprocess, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "fedgrpo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FEDGRPO_LOG": "INFO"},
    )


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def hand_mean_aggregation() -> list[float]:
    """Expert A scores all four candidates, expert B misses candidate 1, expert C misses everything."""
    a = [1.0, 0.0, 1.0, 0.0]
    b = [1.1, 0.1, 0.1]  # candidates 0, 2, 3
    za = [(r - 0.5) / (sample_std(a) + EPS) for r in a]
    mb = sum(b) / 3
    zb = {i: (r - mb) / (sample_std(b) + EPS) for i, r in zip([0, 2, 3], b, strict=True)}
    combined = [(za[0] + zb[0]) / 2, za[1], (za[2] + zb[2]) / 2, (za[3] + zb[3]) / 2]
    centre = sum(combined) / 4
    return [c - centre for c in combined]
