"""The learning curve: the held-out evaluation every ``eval.every_steps`` training steps, so that
"accuracy against step" has more than a run's two ends.

Each point is one line of the run folder's ``curve.jsonl`` (torch-free to read: the suite report
plots it), its per-question outcomes go to ``outcomes.json`` under ``step-N`` (paired by question id
with every other evaluation), and the last step is left to the run's own ``after`` evaluation. A
resumed run replays the steps after its checkpoint: a point it evaluates again replaces the old
one and every later one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

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


class HeldOutCurve(TrainerCallback):
    """Every ``every`` steps (but the last), ``evaluate(model, tag)`` and a point in ``curve.jsonl``;
    ``seconds`` is what the evaluations took (the run leaves it out of its training time)."""

    def __init__(self, evaluate: Callable[[Any, str], dict[str, Any]], every: int, path: Path) -> None:
        self.evaluate, self.every, self.path = evaluate, every, path
        self.seconds = 0.0

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        step = state.global_step
        if step % self.every or step >= state.max_steps or model is None:
            return
        start = time.perf_counter()
        accuracy = self.evaluate(model, curve_tag(step))
        seconds = time.perf_counter() - start
        self.seconds += seconds
        add_point(self.path, step, accuracy, seconds)
        log.info("held-out evaluation at step %d took %.0f s", step, seconds)
