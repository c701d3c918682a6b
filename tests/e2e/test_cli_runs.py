"""Whole runs of the ``fedgrpo`` command on the smoke preset, in real subprocesses."""

from __future__ import annotations

import json
import random
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


def start_run(args: list[str], stderr_path: Path) -> subprocess.Popen:
    """``fedgrpo ARGS`` in the background; stderr to a file, not a pipe (a full pipe would stall it)."""
    with stderr_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fedgrpo.cli", *args], stdout=subprocess.DEVNULL, stderr=log
        )


def wait_for(reached, proc: subprocess.Popen, seconds: float = 180) -> None:
    """Poll until ``reached()``; fail if the run ends first."""
    deadline = time.time() + seconds
    while not reached() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"


def complete_checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoints/checkpoint-*/COMPLETE"))


def resumed_step(stderr: str) -> int:
    """The checkpoint step a ``--resume`` run says it resumed from (0: it found none)."""
    if "resuming from " not in stderr:
        return 0
    return int(stderr.split("resuming from ")[1].split("(step ")[1].split(")")[0])


def test_interrupted_run_resumes_from_last_complete_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    args = [
        "run",
        "smoke",
        f"run.output_dir={run_dir}",
        "run.save_steps=2",
        "grpo.max_steps=200",
        "eval.before=false",
    ]
    proc = start_run(args, tmp_path / "stderr.log")
    # any complete checkpoint at step >= 4: the tiny model runs several steps a second, and with
    # save_total_limit=2 a given checkpoint folder is gone again within a second
    wait_for(lambda: any(step >= 4 for step in complete_checkpoints(run_dir)), proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130  # Ctrl-C: a clean exit that says how to continue
    assert "Continue with --resume" in (tmp_path / "stderr.log").read_text()
    assert any(step >= 4 for step in complete_checkpoints(run_dir)), "no checkpoint at step >= 4 survived"
    torn = run_dir / "checkpoints" / "checkpoint-999"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half a file")

    done = fedgrpo(*args, "--resume", "grpo.max_steps=8")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")]
    assert 999 not in saved and "removed incomplete checkpoint" in done.stderr
    assert resumed_step(done.stderr) >= 4
    steps = [r["step"] for r in metric_rows(run_dir)]
    assert steps == list(range(1, 9))  # nothing lost, nothing counted twice
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 8
    state = json.loads((run_dir / "checkpoints" / "checkpoint-8" / "fedgrpo_state.json").read_text())
    assert state["total"]["rounds"] == 8


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])  # ~1-3 min each
def test_kill_9_at_a_random_step_then_resume_loses_and_repeats_no_step(tmp_path: Path, seed: int) -> None:
    """SIGKILL (no handler runs) once metrics.jsonl shows a seeded random step, then ``--resume``.

    Precisely: rows up to the checkpoint resumed from are kept as they were (not run again); rows logged
    after it before the kill are replaced by the resumed run's rows for those steps (once each); a line
    torn by the kill is dropped. So metrics.jsonl ends with exactly the steps 1..max_steps, once each,
    and the federation's round count in the last checkpoint equals max_steps."""
    max_steps = 15  # a multiple of save_steps: the last checkpoint is at max_steps
    kill_at = random.Random(seed).randint(2, 10)
    run_dir = tmp_path / f"killed-{seed}"
    args = ["run", "smoke", f"run.output_dir={run_dir}", "run.save_steps=3", f"grpo.max_steps={max_steps}"]
    args += ["eval.before=false", "eval.after=false"]
    proc = start_run(args, tmp_path / "stderr.log")
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and f'"step": {kill_at},' in metrics.read_text(), proc)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = metric_rows(run_dir)
    checkpointed = complete_checkpoints(run_dir)
    assert before[-1]["step"] >= kill_at and before[-1]["step"] < max_steps
    with metrics.open("a") as fh:  # as if the kill had come in the middle of writing the next row
        fh.write(f'{{"step": {before[-1]["step"] + 1}, "seconds": 0.')

    done = fedgrpo(*args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is torn" in done.stderr
    resumed = resumed_step(done.stderr)
    assert resumed == (checkpointed[-1] if checkpointed else 0) and resumed % 3 == 0
    after = metric_rows(run_dir)
    assert [r["step"] for r in after] == list(range(1, max_steps + 1))  # none lost, none twice
    assert after[:resumed] == [r for r in before if r["step"] <= resumed]  # kept, not run again
    assert json.loads((run_dir / "results.json").read_text())["steps"] == max_steps
    assert (run_dir / "final").is_dir()
    last = run_dir / "checkpoints" / f"checkpoint-{max_steps}" / "fedgrpo_state.json"
    assert json.loads(last.read_text())["total"]["rounds"] == max_steps


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
