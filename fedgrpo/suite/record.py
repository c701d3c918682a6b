"""One run of a suite as the report and the plots read it: its status, results, config, metrics,
question outcomes and whether it is stale; and the files of a run that make its committed record."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedgrpo.run.curve import CURVE_FILE
from fedgrpo.run.intervals import wilson_interval
from fedgrpo.run.outcomes import OUTCOMES_FILE, DomainOutcomes
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.suite.provenance import STALE_FILE, listed_stale, migrated
from fedgrpo.suite.runner import STATUS_FILE, read_status

# what a run's committed record keeps (docs/results/<suite>/runs/<run>/): small, and all the report reads
# (and dpsda-fl's synthetic samples, a few KB: whether that baseline is fair is read from them)
RECORD_FILES = ("config.yaml", "results.json", "metrics.jsonl", OUTCOMES_FILE, CURVE_FILE, "synthetic.jsonl")


@dataclass
class RunRecord:
    name: str
    method: str
    status: str
    error: str | None = None
    wall_seconds: float | None = None
    results: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # held-out points during training
    outcomes: dict[str, DomainOutcomes] | None = None  # after training, per domain; None: not recorded
    stale: str | None = None  # why the row no longer stands for its method's code, or None

    @property
    def group(self) -> str:
        """The run's name without its seed: the runs whose seeds a comparison pools."""
        return re.sub(r"__seed=-?\d+", "", self.name)

    @property
    def label(self) -> str:
        """The method as the plots group it: FedGRPO by selector and setting, Fedpetuning by its local
        training."""
        if self.method == "fedpetuning":
            return f"fedpetuning/{self.config.get('fedpetuning', {}).get('method', 'sft')}"
        if self.method != "fedgrpo":
            return self.method
        fed = self.config.get("federation", {})
        setting = self.config.get("data", {}).get("setting", "ground-truth")
        return f"fedgrpo/{fed.get('selector', '?')}" + ("/no-gt" if setting == "no-ground-truth" else "")

    @property
    def num_clients(self) -> int | None:
        return self.config.get("data", {}).get("num_clients")

    @property
    def experts_per_question(self) -> int | None:
        """M, for FedGRPO runs (the baselines route nothing)."""
        if self.method != "fedgrpo":
            return None
        return self.config.get("federation", {}).get("experts_per_question")

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    def answer_counts(self, when: str = "after") -> tuple[int, int] | None:
        """(correct answers, questions) over all domains pooled; None when not evaluated."""
        return _answer_counts((self.results or {}).get(when) or {})

    def curve_counts(self) -> list[tuple[int, int, int]]:
        """(step, correct answers, questions) over all domains: before (step 0), every point of the
        learning curve, after (the last step); the evaluations the run made."""
        if not self.results:
            return []
        points = [(0, self.answer_counts("before"))] if self.results.get("before") else []
        points += [(p["step"], _answer_counts(p["accuracy"])) for p in self.curve]
        points.append((int(self.results.get("steps") or 0), self.answer_counts("after")))
        return [(step, *counts) for step, counts in points if counts]

    def overall(self, when: str = "after") -> tuple[float, float, float] | None:
        """Answer accuracy over all domains pooled, with its interval; None when not evaluated."""
        counts = self.answer_counts(when)
        if counts is None:
            return None
        correct, n = counts
        return (correct / n, *wilson_interval(correct, n))

    def bytes_total(self) -> int:
        comm = (self.results or {}).get("communication") or {}
        return int(comm.get("fed/bytes_down", 0)) + int(comm.get("fed/bytes_up", 0))


def _answer_counts(domains: dict[str, dict[str, Any]]) -> tuple[int, int] | None:
    n = sum(d["n"] for d in domains.values())
    correct = sum(d.get("answer_correct") or 0 for d in domains.values())
    return (correct, n) if n else None


def pooled_curve(runs: list[RunRecord]) -> list[tuple[int, int, int]]:
    """A group's learning curve, its seeds pooled: per step, the right answers and questions of every
    run evaluated at that step."""
    by_step: dict[int, list[int]] = {}
    for r in runs:
        for step, correct, n in r.curve_counts():
            total = by_step.setdefault(step, [0, 0])
            total[0] += correct
            total[1] += n
    return [(step, c, n) for step, (c, n) in sorted(by_step.items())]


def stale_mark(text: str, stale: object) -> str:
    """A run's or group's name as the report and plots show it: marked when its row is stale."""
    return text + (" (stale)" if stale else "")


def pooled_counts(runs: list[RunRecord]) -> tuple[int, int]:
    """Right answers and questions over runs (a group's seeds), leaving out runs without results."""
    counts = [c for c in (r.answer_counts() for r in runs) if c]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def copy_records(suite_folder: Path, dest: Path) -> list[str]:
    """Copy what a suite's committed record keeps into ``dest``: ``suite.json``, ``stale.yaml`` if
    any, and each run's :data:`RECORD_FILES`; returns the runs copied. Records accumulate: runs already
    in ``dest`` and not in the suite folder (made earlier, e.g. by ``--only``) keep their entries.
    Legacy code hashes are migrated to tree hashes on the way (:func:`migrate_hashes`)."""
    dest.mkdir(parents=True, exist_ok=True)
    if (suite_folder / STATUS_FILE).exists():
        merged = {**read_status(dest), **read_status(suite_folder)}
        write_json_atomic(dest / STATUS_FILE, {"runs": merged})
        migrate_hashes(dest)
    if (suite_folder / STALE_FILE).exists():
        listed = {**listed_stale(dest), **listed_stale(suite_folder)}
        (dest / STALE_FILE).write_text(yaml.safe_dump(listed, sort_keys=False, allow_unicode=True))
    copied = []
    for run_dir in sorted(p for p in (suite_folder / "runs").glob("*") if (p / "results.json").exists()):
        (dest / "runs" / run_dir.name).mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, dest / "runs" / run_dir.name / name)
        copied.append(run_dir.name)
    return copied


def migrate_hashes(folder: Path) -> list[str]:
    """Turn the legacy (bytes) code hashes of a suite folder's ``suite.json`` into tree hashes where
    git holds the recorded commit and its files are what ran (:func:`~fedgrpo.suite.provenance.migrated`),
    so that a docstring edit made since no longer marks those rows stale; returns the runs migrated."""
    status, done = read_status(folder), []
    for name, entry in status.items():
        code = migrated(entry.get("method", ""), entry.get("code"))
        if code is not None:
            entry["code"], done = code, [*done, name]
    if done:
        write_json_atomic(folder / STATUS_FILE, {"runs": status})
    return done
