"""The learning curve: held-out evaluations every ``eval.every_steps`` steps, paired, resumable."""

from __future__ import annotations

from pathlib import Path

from fedgrpo.config import load_config
from fedgrpo.run.curve import CURVE_FILE, add_point, read_curve, step_seconds
from fedgrpo.run.outcomes import load_outcomes
from fedgrpo.simulation.in_process import run_in_process


def test_a_run_evaluates_every_n_steps_and_a_resume_replaces_the_replayed_points(tmp_path: Path) -> None:
    out = tmp_path / "run"
    over = [
        f"run.output_dir={out}",
        "eval.before=false",
        "eval.every_steps=1",
        "run.save_steps=2",
        "data.heldout_per_domain=3",
    ]
    results = run_in_process(load_config("smoke", [*over, "grpo.max_steps=2"]))
    points = read_curve(out / CURVE_FILE)
    assert [p["step"] for p in points] == [1]  # the last step is the run's own "after"
    # seconds are rounded to 0.1: a fast machine (CI) shows 0.0 for a tiny evaluation
    assert results["curve_eval_seconds"] >= points[0]["seconds"] >= 0
    at_1 = load_outcomes(out, "step-1")
    assert at_1 is not None and set(at_1) == set(points[0]["accuracy"])
    for domain, acc in points[0]["accuracy"].items():
        assert at_1[domain].answer.count("1") == acc["answer_correct"] and len(at_1[domain].qids) == acc["n"]
        assert at_1[domain].qids == load_outcomes(out, "after")[domain].qids  # paired question by question

    # resumed from checkpoint-2 to 4 more steps: step 2 is not replayed (it was the first run's "after")
    run_in_process(load_config("smoke", [*over, "grpo.max_steps=4"]), resume=True)
    assert [p["step"] for p in read_curve(out / CURVE_FILE)] == [1, 3]


def test_a_replayed_point_drops_itself_and_every_later_one(tmp_path: Path) -> None:
    path = tmp_path / CURVE_FILE
    for step in (2, 4, 6):
        add_point(path, step, {"d": {"n": 1}}, 1.0)
    add_point(path, 4, {"d": {"n": 2}}, 1.0)
    assert [(p["step"], p["accuracy"]["d"]["n"]) for p in read_curve(path)] == [(2, 1), (4, 2)]


def test_a_rows_seconds_leave_out_the_curve_evaluations_made_within_it() -> None:
    rows = [{"step": 1, "seconds": 2.0}, {"step": 3, "seconds": 9.0}, {"step": 4, "seconds": 3.0}]
    points = [{"step": 2, "seconds": 4.0}, {"step": 3, "seconds": 1.0}]
    assert step_seconds(rows, points) == [2.0, 4.0, 3.0]  # row 3 logged steps 2 and 3, both evaluated
