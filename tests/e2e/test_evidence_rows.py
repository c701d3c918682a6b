"""The evidence suite's new rows as ``fedgrpo suite`` runs them, in real subprocesses: Fedpetuning with
GRPO and local-only, selected by a suite row's method and overrides, a learning curve written on the
way, and a second call that skips both finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers import fedgrpo


def test_fedpetuning_grpo_and_local_only_run_from_suite_rows_and_are_skipped_when_done(
    tmp_path: Path,
) -> None:
    out = tmp_path / "suite"
    small = {"grpo.max_steps": 2, "run.save_steps": 2, "data.heldout_per_domain": 2, "eval.every_steps": 1}
    suite = {
        "name": "evidence-e2e",
        "base": "graph-smoke",
        "suite_dir": str(out),
        "overrides": small,
        "runs": [
            {
                "name": "fedpetuning-grpo",
                "method": "fedpetuning",
                "overrides": {
                    "fedpetuning.method": "grpo",
                    "fedpetuning.rounds": 1,
                    "fedpetuning.local_steps": 1,
                    "fedpetuning.batch_size": 4,
                    "fedpetuning.num_generations": 4,
                },
            },
            {"method": "local-only"},
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    first = fedgrpo("suite", str(tmp_path / "suite.yaml"), timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]

    grpo = json.loads((out / "runs" / "fedpetuning-grpo" / "results.json").read_text())
    assert grpo["method"] == "fedpetuning" and grpo["local_method"] == "grpo" and grpo["steps"] == 1
    assert grpo["communication"]["fed/bytes_up"] > 0 and grpo["after"]
    alone = json.loads((out / "runs" / "local-only" / "results.json").read_text())
    assert alone["method"] == "local-only" and alone["steps"] == 2
    assert set(alone["communication"]["fed/bytes_up_per_client"]) == {alone["local_only"]["client"]}
    curve = (out / "runs" / "local-only" / "curve.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == [1]
    report = (out / "report.md").read_text()
    assert "| fedpetuning-grpo | fedpetuning/grpo |" in report and "| local-only | local-only |" in report

    second = fedgrpo("suite", str(tmp_path / "suite.yaml"), timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        "fedpetuning-grpo is done; skipped" in second.stderr
        and "local-only is done; skipped" in second.stderr
    )
