"""Whole runs of the ``fedgrpo`` command on the smoke preset, in real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import fedgrpo, metric_rows


def test_smoke_run_writes_a_complete_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "smoke"
    proc = fedgrpo("run", "smoke", f"run.output_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "split.json", "metrics.jsonl", "results.json", "eval_before.json", "run.log"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "final").is_dir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 3
    assert set(results["before"]) == set(results["after"]) == {"sums_1digit", "sums_2digit", "syllogism"}
    for acc in results["after"].values():
        assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"] and 0 <= acc["majority_rate"] <= 1
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "fed/reward_mean",
        "fed/advantage_std",
        "fed/zero_spread_share",
        "fed/bytes_down",
        "fed/bytes_up",
        "seconds",
    ):
        assert key in rows[0]
    comm = results["communication"]
    assert comm["fed/bytes_down"] == sum(r["fed/bytes_down"] for r in rows) > 0
    assert comm["fed/bytes_up"] == sum(r["fed/bytes_up"] for r in rows) > 0
    assert sum(comm["fed/bytes_up_per_client"].values()) == comm["fed/bytes_up"]
    assert "before [95% CI]" in proc.stderr  # the readable table at the end

    again = fedgrpo("run", "smoke", f"run.output_dir={run_dir}")
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a finished run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_interrupted_run_resumes_from_last_complete_checkpoint(tmp_path: Path, sig: signal.Signals) -> None:
    run_dir = tmp_path / "interrupted"
    args = [
        "run",
        "smoke",
        f"run.output_dir={run_dir}",
        "run.save_steps=2",
        "grpo.max_steps=200",
        "eval.before=false",
    ]
    log = (tmp_path / "stderr.log").open("w")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgrpo.cli", *args], stdout=subprocess.DEVNULL, stderr=log
    )

    def reached_step_4() -> bool:
        # any complete checkpoint at step >= 4: the tiny model runs several steps a second, and with
        # save_total_limit=2 a given checkpoint folder is gone again within a second
        done = [int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoints/checkpoint-*/COMPLETE")]
        return any(step >= 4 for step in done)

    deadline = time.time() + 180
    while not reached_step_4() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    log.close()
    if sig == signal.SIGINT:  # Ctrl-C: a clean exit that says how to continue
        assert proc.returncode == 130
        assert "Continue with --resume" in (tmp_path / "stderr.log").read_text()
    assert reached_step_4(), "no complete checkpoint at step 4 or later survived"
    torn = run_dir / "checkpoints" / "checkpoint-999"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half a file")

    done = fedgrpo(*args, "--resume", "grpo.max_steps=8")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")]
    assert 999 not in saved and "removed incomplete checkpoint" in done.stderr
    resumed = int(done.stderr.split("resuming from ")[1].split("(step ")[1].split(")")[0])
    assert resumed >= 4
    steps = [r["step"] for r in metric_rows(run_dir)]
    assert steps == list(range(1, 9))  # nothing lost, nothing counted twice
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 8
    state = json.loads((run_dir / "checkpoints" / "checkpoint-8" / "fedgrpo_state.json").read_text())
    assert state["total"]["rounds"] == 8


@pytest.mark.parametrize("selector", ["random", "all"])
def test_selectors_run(tmp_path: Path, selector: str) -> None:
    proc = fedgrpo(
        "run",
        "smoke",
        f"run.output_dir={tmp_path / selector}",
        f"federation.selector={selector}",
        "grpo.max_steps=1",
        "eval.before=false",
        "eval.after=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = metric_rows(tmp_path / selector)[0]
    asked = len(row["fed/bytes_down_per_client"])
    assert asked == 3 if selector == "all" else 1 <= asked <= 3


def test_a_run_that_fails_exits_1_with_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "doomed"
    # a policy folder with no model in it: loading fails (an OSError, not one of fedgrpo's own errors)
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    proc = fedgrpo("run", "smoke", f"run.output_dir={run_dir}", f"model.name_or_path={bad}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "\nfedgrpo: failed: " in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()
