"""The model-free canary bench (bench/canaries.py, numbers in docs/trust.md) on a small setting: a
flipping client among strong honest experts is excluded, no honest one is, canaries never reach
the advantages, and the command docs/trust.md shows runs."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.canaries import SCENARIOS, Setting, run_setting


def test_the_bench_excludes_a_flipper_and_no_strong_honest_expert() -> None:
    liars = SCENARIOS["flip + random + always-high"]
    result = run_setting(Setting(0.5, liars, 40, 0, 0.05, accuracy=(0.6, 0.5, 0.4, 0.3, 0.25)))
    assert result["liar_excluded_at"]["client-0"] is not None  # the flipper
    assert result["honest_excluded"] == [] and result["rounds_run"] >= 30  # stops when < M are left
    assert result["honesty"]["client-0"][0] < 0 < result["honesty"]["client-1"][0]


def test_the_documented_command_runs(tmp_path) -> None:
    out = tmp_path / "canaries.json"
    cmd = [sys.executable, "bench/canaries.py", "--rounds", "12", "--seeds", "1", "--shares", "0.5"]
    cmd += ["--margin", "0.15", "--fanout", "2", "--min-questions", "5"]
    subprocess.run([*cmd, "--scenarios", "clean", "--out", str(out)], check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert list(report["summary"]) == ["share 0.5 | clean"] and report["threshold"] == 0.05
    assert (report["margin"], report["fanout"], report["min_questions"]) == (0.15, 2, 5)
    run = report["runs"]["share 0.5 | clean"][0]
    assert run["client_items_per_round"] > 6.0  # canaries asked of M + 2 clients, training items of M
