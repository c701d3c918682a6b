"""What the trust suite's training runs show (``suites/trust.yaml``), read from their folders alone.

Per run: answer accuracy after training over all domains (95% Wilson interval) and its difference
from the clean run (Newcombe's interval, as the suite report gives it); the mean reward correctness
over the steps (the share of rewards whose correctness part matched the truth); for the liars
(``clients.adversaries``) their share of the expert slots in the first and last third of the steps
(a fair share is 1/K per client: each would be among the experts of M/K of the questions) and their
competence (``fed/competence``, mean edge weight) at the first step and after each third; for
private runs the epsilon each client composed.

    python bench/trust_runs.py runs/suites/trust
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean
from typing import Any

from fedgrpo.run.intervals import difference_interval
from fedgrpo.suite.record import RunRecord
from fedgrpo.suite.report import collect


def slot_share(metrics: list[dict[str, Any]], clients: list[str]) -> float | None:
    """The share of all routed expert slots that went to ``clients``."""
    routed = [m.get("fed/routed") or {} for m in metrics]
    total = sum(sum(r.values()) for r in routed)
    return sum(r.get(c, 0) for r in routed for c in clients) / total if total else None


def competence(metrics: list[dict[str, Any]], client: str) -> float | None:
    values = [m["fed/competence"][client] for m in metrics if client in (m.get("fed/competence") or {})]
    return values[-1] if values else None


def trajectory(metrics: list[dict[str, Any]], client: str) -> list[float]:
    """The client's competence at the first step and at the end of each third of the steps."""
    points = [competence(metrics[:1], client)] + [competence(part, client) for part in thirds(metrics)]
    return [v for v in points if v is not None]


def thirds(metrics: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    n = len(metrics)
    return [metrics[: n // 3], metrics[n // 3 : 2 * n // 3], metrics[2 * n // 3 :]]


def describe(run: RunRecord, clean: RunRecord | None) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run.name}
    counts, overall = run.answer_counts(), run.overall()
    if counts is None or overall is None:
        return {**row, "status": run.status}
    row["answer accuracy"] = f"{overall[0]:.3f} [{overall[1]:.2f}, {overall[2]:.2f}]"
    base = clean.answer_counts() if clean is not None else None
    if base is not None and run is not clean:
        d, low, high = difference_interval(*counts, *base)
        row["minus clean"] = f"{d:+.3f} [{low:+.2f}, {high:+.2f}]"
    correctness = [
        m["fed/reward_correctness"] for m in run.metrics if m.get("fed/reward_correctness") is not None
    ]
    row["reward correctness"] = f"{mean(correctness):.3f}" if correctness else "-"
    liars = sorted((run.config.get("clients") or {}).get("adversaries") or {})
    if liars:
        parts = thirds(run.metrics)
        first, last = slot_share(parts[0], liars), slot_share(parts[2], liars)
        row["liars' slot share, first / last third"] = (
            f"{first:.3f} / {last:.3f}" if first is not None and last is not None else "-"
        )
        row["liars' competence, start -> thirds"] = "; ".join(
            f"{c}: " + " -> ".join(f"{v:.3f}" for v in trajectory(run.metrics, c)) for c in liars
        )
    spent = (run.results or {}).get("privacy") or {}  # client -> {"epsilon", "delta"}
    if spent and run.method == "fedgrpo":
        row["epsilon spent per client"] = " / ".join(f"{v['epsilon']:.0f}" for _, v in sorted(spent.items()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite_dir", type=Path, help="the suite's folder, e.g. runs/suites/trust")
    args = parser.parse_args()
    records = [r for r in collect(args.suite_dir) if r.results is not None]
    clean = next((r for r in records if r.name == "clean"), None)
    rows = [describe(r, clean) for r in records]
    header = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in header) + " |")


if __name__ == "__main__":
    main()
