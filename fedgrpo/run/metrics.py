"""Per-step metrics: one JSON line per logged step, TRL's numbers beside the federation's."""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from fedgrpo.run.metric_names import tracked
from fedgrpo.run.trl import TrainingReward
from fedgrpo.server import GroupRecord
from fedgrpo.server.stats import finite
from fedgrpo.storage.atomic import write_text_atomic

log = logging.getLogger(__name__)

# TRL logs the mean of what the reward function returns as "reward": here that is an advantage (zero
# mean by construction), not a reward. The real rewards are fed/reward_mean; these keys are renamed.
_TRL_RENAMES = {"reward": "advantage_mean", "reward_std": "advantage_std"}


class Audit(Protocol):
    """Judges a step's rounds with labels only a simulation's experimenter holds
    (:class:`fedgrpo.simulation.audit.RoutingAudit`); a deployment has none."""

    def summary(self, groups: list[GroupRecord]) -> dict[str, float | None]: ...


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsCallback(TrainerCallback):
    """Writes ``metrics.jsonl``: step, seconds, peak memory, ``trl/*`` and the ``fed/*`` round numbers,
    with each client's competence (``fed/competence``) where the selector keeps one."""

    def __init__(self, path: Path, advantage: TrainingReward, audit: Audit | None = None) -> None:
        self.path = path
        self.advantage = advantage
        self.audit = audit
        self._last = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not logs or "train_runtime" in logs:
            return
        now = time.perf_counter()
        row: dict[str, Any] = {
            "step": state.global_step,
            "seconds": round(now - self._last, 3),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        self._last = now
        for key, value in logs.items():
            if not key.startswith("rewards/"):  # the same as reward, reward_std
                row[f"trl/{_TRL_RENAMES.get(key, key)}"] = value
        stats, groups = self.advantage.drain()
        row.update(stats.summary())
        selector = getattr(self.advantage, "selector", None)  # a federation's; central GRPO has none
        competence = selector.competences() if selector is not None else None
        if competence is not None:  # after this step's online updates
            row["fed/competence"] = {c: round(v, 4) for c, v in sorted(competence.items())}
        if self.audit is not None:
            row.update(self.audit.summary(groups))
        # JSON has no NaN or infinity: any such number, wherever it came from, is written as null.
        row = finite(row)
        # The trackers in grpo.report_to (tensorboard, trackio, ...) read this same dict after this
        # callback (install_metrics puts it first): give them the federation's scalar numbers too
        # (the ones fedgrpo.run.metric_names lists as scalars).
        logs.update({k: v for k, v in row.items() if tracked(k, v)})
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        if row["fed/rejected_total"]:
            log.warning(
                "step %d: %d replies rejected %s",
                state.global_step,
                row["fed/rejected_total"],
                row["fed/rejected"],
            )


def install_metrics(trainer: Any, callback: MetricsCallback) -> None:
    """Put the metrics callback before the trainer's reporting callbacks (the Trainer adds those
    first, and ``add_callback`` appends), so the ``fed/`` numbers it adds to the logs reach them."""
    trainer.callback_handler.callbacks.insert(0, callback)


def _parsed_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Each complete row with its line. A process killed mid-append leaves a torn last line: it is
    dropped with a warning (its step has no checkpoint yet, so a resumed run logs it again)."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if line.strip():
                log.warning("%s line %d is torn (a run killed while writing it); dropped", path, number)
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in _parsed_lines(path)]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines for steps after the checkpoint we resume from (they will be run again), and any
    torn line. Written atomically: a kill during this leaves the old file, never half of it."""
    if not path.exists():
        return
    keep = [line for line, row in _parsed_lines(path) if row["step"] <= last_step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))
