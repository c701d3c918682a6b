"""``fedgrpo suite`` end to end in real subprocesses: a crashing run is recorded and the suite goes on;
after the cause is fixed, a second call skips the finished runs and completes the failed one. And the
``fed/`` metrics reach a real TensorBoard event file and a real trackio store through TRL's ``report_to``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedgrpo.algorithms.central_grpo import pooled_upload
from fedgrpo.config import load_config
from fedgrpo.models.loading import tiny_random_folder
from fedgrpo.simulation.data import build_data
from tests.helpers import fedgrpo, metric_rows

SMALL = {"grpo.max_steps": 2, "run.save_steps": 2, "data.heldout_per_domain": 3}


def test_a_suite_records_a_crash_goes_on_and_resumes(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"  # exists, so it validates; empty, so loading it crashes mid-suite
    model_dir.mkdir()
    out = tmp_path / "suite"
    suite = {
        "name": "e2e",
        "base": "smoke",
        "suite_dir": str(out),
        "overrides": SMALL,
        "runs": [
            {"method": "zero-shot"},
            {"name": "crashes", "method": "fedgrpo", "overrides": {"model.name_or_path": str(model_dir)}},
            {"method": "central-grpo"},
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))

    first = fedgrpo("suite", str(tmp_path / "suite.yaml"), timeout=900)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "1 run(s) failed: crashes" in first.stderr
    status = json.loads((out / "suite.json").read_text())["runs"]
    statuses = [status[n]["status"] for n in ("zero-shot", "crashes", "central-grpo")]
    assert statuses == ["done", "failed", "done"]
    error = status["crashes"]["error"]
    assert error.startswith("failed: ") and "Error" in error  # the run's own reason, as the CLI printed it
    logged = " ".join((out / "logs" / "crashes.log").read_text().split())
    assert error.split("(FEDGRPO_LOG")[0].strip() in logged
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "| crashes | fedgrpo |" in report
    assert (out / "report.html").exists() and (out / "plots" / "accuracy_vs_bytes.png").exists()

    zero = json.loads((out / "runs" / "zero-shot" / "results.json").read_text())
    assert zero["method"] == "zero-shot" and zero["steps"] == 0 and zero["before"] == zero["after"]
    assert zero["communication"]["fed/bytes_down"] == zero["communication"]["fed/bytes_up"] == 0
    central = json.loads((out / "runs" / "central-grpo" / "results.json").read_text())
    expected_upload = pooled_upload(build_data(load_config("smoke", [f"{k}={v}" for k, v in SMALL.items()])))
    assert central["steps"] == 2 and central["communication"]["fed/bytes_down"] == 0
    assert central["communication"]["fed/bytes_up"] == expected_upload.bytes_up > 0
    held = central["split"]["client_domains"]
    assert central["pooled_examples"] == sum(sum(counts.values()) for counts in held.values())
    assert set(central["after"]) == set(zero["after"])  # the same held-out set
    assert all(r["fed/reward_mean"] is not None for r in metric_rows(out / "runs" / "central-grpo"))
    done = {n: (out / "runs" / n / "results.json").stat().st_mtime_ns for n in ("zero-shot", "central-grpo")}

    shutil.copytree(tiny_random_folder(), model_dir, dirs_exist_ok=True)  # fix the cause
    second = fedgrpo("suite", str(tmp_path / "suite.yaml"), timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "zero-shot is done; skipped" in second.stderr and "central-grpo is done; skipped" in second.stderr
    for name, mtime in done.items():
        assert (out / "runs" / name / "results.json").stat().st_mtime_ns == mtime
    status = json.loads((out / "suite.json").read_text())["runs"]
    assert {entry["status"] for entry in status.values()} == {"done"}
    assert json.loads((out / "runs" / "crashes" / "results.json").read_text())["steps"] == 2
    assert "Failed runs" not in (out / "report.md").read_text()


def test_fed_metrics_reach_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the trackers extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = [f"run.output_dir={run_dir}", "grpo.report_to=[tensorboard]", "eval.before=false"]
    proc = fedgrpo("run", "smoke", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (events,) = {p.parent for p in run_dir.rglob("events.out.tfevents.*")}
    assert events == run_dir / "tensorboard"  # the run folder's own, not checkpoints/runs/<date>_<host>/
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/fed/reward_mean", "train/fed/bytes_up", "train/fed/rounds"} <= set(scalars), scalars
    logged = [e.value for e in EventAccumulator(str(events)).Reload().Scalars("train/fed/rounds")]
    assert len(logged) == 3 and all(v >= 1 for v in logged)


def test_fed_metrics_reach_trackio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trackio, local-first (a SQLite file under TRACKIO_DIR; no Space, no network), through report_to."""
    pytest.importorskip("trackio", reason="the trackers extra is not installed")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    run_dir = tmp_path / "run"
    args = [
        f"run.output_dir={run_dir}",
        "grpo.report_to=[trackio]",
        "grpo.project=fedgrpo-e2e",
        "grpo.run_name=smoke",
        "eval.before=false",
    ]
    proc = fedgrpo("run", "smoke", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # trackio reads TRACKIO_DIR when imported: read its store in a process of its own
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps(S.get_logs('fedgrpo-e2e', 'smoke'), default=str))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    logs = json.loads(read.stdout)
    keys = set().union(*(row.keys() for row in logs))
    assert {"train/fed/reward_mean", "train/fed/bytes_up", "train/fed/rounds"} <= keys, sorted(keys)
    rounds = [row["train/fed/rounds"] for row in logs if "train/fed/rounds" in row]
    assert len(rounds) == 3 and all(v >= 1 for v in rounds)
