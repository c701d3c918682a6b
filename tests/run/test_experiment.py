"""A whole run through the Python API, in this process: the run folder, resume, and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgrpo.config import load_config
from fedgrpo.run.experiment import run
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.in_process import run_in_process, server_data
from fedgrpo.storage.checkpoints import complete_checkpoints
from fedgrpo.storage.run_folder import RunExists
from fedgrpo.transport import InProcessTransport
from tests.helpers import metric_rows


def test_in_process_run_writes_its_folder_and_resumes_without_repeating_a_step(tmp_path: Path) -> None:
    out = tmp_path / "run"
    over = [f"run.output_dir={out}", "eval.before=false", "eval.after=false", "run.save_steps=2"]
    results = run_in_process(load_config("smoke", [*over, "grpo.max_steps=2"]))
    assert results["steps"] == 2 and [r["step"] for r in metric_rows(out)] == [1, 2]
    row = metric_rows(out)[0]
    assert "trl/advantage_mean" in row and "trl/reward" not in row  # TRL's "reward" is an advantage
    assert row["fed/reward_mean"] is not None and 0 <= row["fed/reward_correctness"] <= 1
    assert [s for s, _ in complete_checkpoints(out / "checkpoints")] == [2]
    with pytest.raises(RunExists, match="--resume"):
        run_in_process(load_config("smoke", [*over, "grpo.max_steps=2"]))

    more = run_in_process(load_config("smoke", [*over, "grpo.max_steps=4"]), resume=True)
    assert more["steps"] == 4 and [r["step"] for r in metric_rows(out)] == [1, 2, 3, 4]
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "fedgrpo_state.json").read_text())
    assert state["total"]["rounds"] == 4 == more["communication"]["fed/rounds"]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "doomed"
    cfg = load_config("smoke", [f"run.output_dir={out}", "eval.before=false", "federation.selector=random"])
    split = build_data(cfg)
    with pytest.raises(ValueError, match="cannot pick M=2 experts from 0 clients"):
        run(cfg, InProcessTransport([]), server_data(split))  # nobody to ask: the first step fails
    assert not out.exists()
