"""dpsda-fl as a command: a LoRA run (SFT then GRPO on the synthetic set) and a resume that reuses the
released synthetic set instead of asking the clients again (which would spend more privacy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two runs of the baseline: minutes on a shared 2-core machine


def dpsda(config: str, *args: str) -> subprocess.CompletedProcess:
    """``fedgrpo run CONFIG method=dpsda-fl ...`` as a user types it."""
    command = [sys.executable, "-m", "fedgrpo.cli", "run", config, "method=dpsda-fl", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_lora_run_and_a_resume_that_reuses_the_released_synthetic_set(tmp_path: Path) -> None:
    out = tmp_path / "run"
    over = [
        "smoke",
        f"run.output_dir={out}",
        "model.lora.enabled=true",
        "dpsda.samples=8",
        "dpsda.iterations=3",
        "dpsda.target_epsilon=3.0",
        "dpsda.sft_steps=2",
        "dpsda.grpo_steps=2",
        "eval.max_per_domain=2",
    ]
    first = dpsda(*over)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 4 and results["before"] and results["after"]
    assert results["privacy"]["epsilon"] == pytest.approx(3.0, abs=1e-3)
    assert (out / "final" / "adapter_config.json").exists()  # LoRA: the server's adapter is saved
    evolution = (out / "evolution.jsonl").read_bytes()
    released = (out / "synthetic.jsonl").read_bytes()

    again = dpsda(*over)  # a second run over the folder is refused, before anything is asked of a client
    assert again.returncode != 0 and "--resume" in again.stderr

    (out / "results.json").unlink()  # as if the run had died while training on the synthetic set
    resumed = dpsda(*over, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the clients are not asked again" in resumed.stderr
    assert (out / "evolution.jsonl").read_bytes() == evolution
    assert (out / "synthetic.jsonl").read_bytes() == released
    after = json.loads((out / "results.json").read_text())
    assert after["privacy"] == results["privacy"] and after["communication"] == results["communication"]
