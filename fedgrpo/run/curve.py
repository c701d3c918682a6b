"""The learning curve: the held-out evaluation every ``eval.every_steps`` training steps, so that
"accuracy against step" has more than a run's two ends.

Each point is one line of the run folder's ``curve.jsonl``; its per-question outcomes go to
``outcomes.json`` under ``step-N`` (paired by question id with every other evaluation). The last
step is left to the run's own ``after`` evaluation. A resumed run replays the steps after its
checkpoint: a point it evaluates again replaces the old one and every later one. Torch-free: the
suite report plots it; the callback that writes it is :class:`fedgrpo.run.trl.HeldOutCurve`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedgrpo.storage.atomic import write_text_atomic

log = logging.getLogger(__name__)

CURVE_FILE = "curve.jsonl"


def curve_tag(step: int) -> str:
    """The evaluation's name in ``outcomes.json``."""
    return f"step-{step}"


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The curve's points in step order (none when the file is absent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def add_point(path: Path, step: int, accuracy: dict[str, dict[str, Any]], seconds: float) -> None:
    """Write one point, dropping any point at this step or later (they came before a resume)."""
    kept = [p for p in read_curve(path) if p["step"] < step]
    point = {"step": step, "seconds": round(seconds, 1), "accuracy": accuracy}
    write_text_atomic(path, "".join(json.dumps(p) + "\n" for p in [*kept, point]))


def curve_point(
    path: Path, step: int, last: int, every: int | None, evaluate: Callable[[Any, str], Any], policy: Any
) -> float:
    """At every ``every``-th step before ``last``: ``evaluate(policy, tag)`` (per domain a
    ``DomainAccuracy``) as a point of the curve; returns the seconds it took (0 when none)."""
    if not every or step % every or step >= last:
        return 0.0
    start = time.perf_counter()
    accuracy = {domain: asdict(result) for domain, result in evaluate(policy, curve_tag(step)).items()}
    seconds = time.perf_counter() - start
    add_point(path, step, accuracy, seconds)
    log.info("held-out evaluation at step %d took %.0f s", step, seconds)
    return seconds


def step_seconds(rows: list[dict[str, Any]], points: list[dict[str, Any]]) -> list[float]:
    """Each ``metrics.jsonl`` row's seconds less the curve's evaluations made within it (a point is
    evaluated after its step, before that step's row is logged)."""
    out, previous = [], 0
    for row in rows:
        spent = sum(p["seconds"] for p in points if previous < p["step"] <= row["step"])
        out.append(max(row["seconds"] - spent, 0.0))
        previous = row["step"]
    return out
