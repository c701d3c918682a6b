"""One run of a suite as the report and the plots read it: its status, results, config and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedgrpo.run.intervals import wilson_interval


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

    @property
    def label(self) -> str:
        """The method as the plots group it: FedGRPO by selector and setting."""
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
        domains = (self.results or {}).get(when) or {}
        n = sum(d["n"] for d in domains.values())
        correct = sum(d.get("answer_correct") or 0 for d in domains.values())
        return (correct, n) if n else None

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
