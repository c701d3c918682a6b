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
    assert results["before"] and results["after"]
    assert results["privacy"]["epsilon"] == pytest.approx(3.0, abs=1e-3)
    # the tiny random model writes no answer tag, so no sample is a training target: nothing trained
    assert results["steps"] == 0 and results["synthetic"]["with_answer"] == 0
    assert "no synthetic sample has an answer" in first.stderr
    evolution = (out / "evolution.jsonl").read_bytes()
    # stand in for a policy that can write answers: the released set, each sample given one
    rows = [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]
    assert rows and not any(r["answer"] for r in rows)
    released = "".join(json.dumps({**r, "answer": str(i)}) + "\n" for i, r in enumerate(rows)).encode()
    (out / "synthetic.jsonl").write_bytes(released)

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
    assert after["steps"] == 4 and after["synthetic"]["with_answer"] == len(rows)
    assert (out / "final" / "adapter_config.json").exists()  # LoRA: the server's adapter is saved


def test_on_flowers_simulation_engine_the_votes_and_the_synthetic_set_are_the_in_process_ones(
    tmp_path: Path,
) -> None:
    """The same command with ``federation.transport=flower-simulation``: every vote request is a Flower
    message to a virtual client (Ray), which votes with its own examples and the same seeded noise."""
    over = [
        "smoke",
        "dpsda.samples=6",
        "dpsda.iterations=2",
        "dpsda.sft_steps=1",
        "dpsda.grpo_steps=1",
        "eval.before=false",
        "eval.after=false",
        "run.threads=1",
    ]
    local = dpsda(*over, f"run.output_dir={tmp_path / 'local'}")
    assert local.returncode == 0, local.stderr[-3000:]
    flower = dpsda(
        *over,
        f"run.output_dir={tmp_path / 'flower'}",
        "federation.transport=flower-simulation",
        "flower.ray_cpus=2",
    )
    assert flower.returncode == 0, flower.stderr[-3000:]
    a, b = (json.loads((tmp_path / f / "results.json").read_text()) for f in ("local", "flower"))
    assert b["transport"]["kind"] == "flower-simulation" and a["transport"]["kind"] == "in_process"
    timing = "fed/seconds"
    assert {k: v for k, v in b["communication"].items() if k != timing} == {
        k: v for k, v in a["communication"].items() if k != timing
    }  # the same bytes each way, per client
    assert a["communication"]["fed/bytes_up"] == 2 * 3 * 6 * 4  # T x K x samples x float32
    assert b["privacy"] == a["privacy"]
    rows = [
        [json.loads(line) for line in (tmp_path / f / "evolution.jsonl").read_text().splitlines()]
        for f in ("local", "flower")
    ]
    assert [r["samples"] for r in rows[1]] == [r["samples"] for r in rows[0]]
    for x, y in zip(rows[0], rows[1], strict=True):  # the summed noisy votes of the same clients
        assert y["votes"] == pytest.approx(x["votes"], abs=1e-3)
    assert (tmp_path / "flower" / "synthetic.jsonl").read_text() == (
        tmp_path / "local" / "synthetic.jsonl"
    ).read_text()
