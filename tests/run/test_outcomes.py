"""Per-question outcomes in the run folder: they add up to the accuracy table, and resume keeps them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from fedgrpo.algorithms import run_method
from fedgrpo.config import load_config
from fedgrpo.data import make_qid
from fedgrpo.run.outcomes import OUTCOMES_FILE, DomainOutcomes, load_outcomes, save_outcomes
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.in_process import run_in_process
from fedgrpo.suite.provenance import source_hash
from tests.helpers import assert_outcomes_match, fedgrpo


def test_a_run_saves_each_question_outcome_and_resume_keeps_the_before_evaluation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedgrpo")
    out = tmp_path / "run"
    over = [f"run.output_dir={out}", "run.save_steps=2"]
    cfg = load_config("smoke", [*over, "grpo.max_steps=2"])
    first = run_in_process(cfg)
    assert_outcomes_match(out, first)
    before = load_outcomes(out, "before")
    assert before is not None
    heldout = build_data(cfg).heldout
    for domain, examples in heldout.items():  # keyed by the data's stable question ids, in order
        assert before[domain].qids == tuple(make_qid(domain, e.question) for e in examples)

    more = run_in_process(load_config("smoke", [*over, "grpo.max_steps=4"]), resume=True)
    assert load_outcomes(out, "before") == before  # the cached before-evaluation, not a new one
    assert caplog.text.count("evaluation before took") == 1
    assert_outcomes_match(out, more)


def test_zero_shot_saves_its_one_evaluation_as_after(tmp_path: Path) -> None:
    out = tmp_path / "zs"
    results = run_method(load_config("smoke", [f"run.output_dir={out}", "method=zero-shot"]))
    assert load_outcomes(out, "before") is None and load_outcomes(out, "after") is not None
    assert_outcomes_match(out, results)


def test_central_grpo_saves_both_evaluations(tmp_path: Path) -> None:
    out = tmp_path / "central"
    over = [f"run.output_dir={out}", "method=central-grpo", "grpo.max_steps=1", "run.save_steps=1"]
    results = run_method(load_config("smoke", over))
    assert load_outcomes(out, "before") is not None and load_outcomes(out, "after") is not None
    assert_outcomes_match(out, results)


def test_the_file_stays_small_and_a_domain_whose_questions_changed_starts_over(tmp_path: Path) -> None:
    qids = [f"{i:016x}" for i in range(1000)]
    ones = [i % 3 == 0 for i in range(1000)]
    save_outcomes(tmp_path, "before", {"d": DomainOutcomes.of(qids, ones, ones, ones)})
    save_outcomes(tmp_path, "after", {"d": DomainOutcomes.of(qids, ones, ones, ones)})
    assert (tmp_path / OUTCOMES_FILE).stat().st_size < 30_000  # 1,000 questions, two evaluations
    save_outcomes(
        tmp_path, "after", {"d": DomainOutcomes.of(qids[:2], [True, False], [True, True], [True, True])}
    )
    assert load_outcomes(tmp_path, "before") is None  # its questions are not the after ones'
    assert json.loads((tmp_path / OUTCOMES_FILE).read_text())["domains"]["d"]["after"]["answer"] == "11"
    with pytest.raises(ValueError, match="one outcome per question"):
        DomainOutcomes.of(["a"], [True, False], [True], [True])


def test_a_suite_records_the_code_each_run_ran_and_its_records_keep_the_outcomes(tmp_path: Path) -> None:
    suite = {
        "name": "s",
        "base": "smoke",
        "suite_dir": str(tmp_path / "suite"),
        "runs": [{"method": "zero-shot"}, {"name": "other", "method": "zero-shot"}],
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    records = tmp_path / "records"
    typo = fedgrpo("suite", str(tmp_path / "s.yaml"), "--only", "zero-shot,othr")
    assert typo.returncode == 2 and "no run matches ['othr'] (runs: zero-shot, other)" in typo.stderr
    proc = fedgrpo("suite", str(tmp_path / "s.yaml"), "--only", "zero*", "--records", str(records))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "suite" / "runs" / "other").exists()  # --only: the other run never started
    assert list(json.loads((records / "suite.json").read_text())["runs"]) == ["zero-shot"]
    entry = json.loads((records / "suite.json").read_text())["runs"]["zero-shot"]
    assert entry["code"]["source_hash"] == source_hash("zero-shot")
    assert (records / "runs" / "zero-shot" / OUTCOMES_FILE).exists()
    assert "| zero-shot | zero-shot |" in (records / "report.md").read_text()

    # a run that failed earlier and is not selected now is reported, but fails no later --only command
    status_file = tmp_path / "suite" / "suite.json"
    status = json.loads(status_file.read_text())
    status["runs"]["other"] = {"method": "zero-shot", "status": "failed", "error": "failed: killed"}
    status_file.write_text(json.dumps(status))
    again = fedgrpo("suite", str(tmp_path / "s.yaml"), "--only", "zero*")
    assert again.returncode == 0 and "run(s) failed" not in again.stderr, again.stderr[-3000:]
    assert "| other | zero-shot |" in (tmp_path / "suite" / "report.md").read_text()  # still reported
