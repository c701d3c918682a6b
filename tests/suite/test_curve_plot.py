"""The report's learning curve: a run group's seeds pooled at each evaluated step, drawn with intervals."""

from __future__ import annotations

import json
from pathlib import Path

from fedgrpo.run.curve import CURVE_FILE, add_point
from fedgrpo.suite.plots import k_lines, make_plots, step_xlabel
from fedgrpo.suite.record import RunRecord, pooled_curve
from fedgrpo.suite.report import collect


def _acc(correct: int, n: int) -> dict:
    return {"d": {"n": n, "answer_correct": correct}}


def _record(folder: Path, name: str, before: int, mid: int, after: int) -> None:
    run = folder / "runs" / name
    run.mkdir(parents=True)
    results = {"steps": 4, "before": _acc(before, 10), "after": _acc(after, 10), "communication": {}}
    (run / "results.json").write_text(json.dumps(results))
    (run / "config.yaml").write_text("method: central-grpo\nseed: 0\n")
    add_point(run / CURVE_FILE, 2, _acc(mid, 10), 1.0)


def test_seeds_are_pooled_per_step_and_the_curve_is_plotted(tmp_path: Path) -> None:
    _record(tmp_path, "central__seed=0", 2, 4, 6)
    _record(tmp_path, "central__seed=1", 3, 5, 8)
    status = {n: {"method": "central-grpo", "status": "done"} for n in ("central__seed=0", "central__seed=1")}
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    records = collect(tmp_path)
    assert [r.curve_counts() for r in records] == [
        [(0, 2, 10), (2, 4, 10), (4, 6, 10)],
        [(0, 3, 10), (2, 5, 10), (4, 8, 10)],
    ]
    assert pooled_curve(records) == [(0, 5, 20), (2, 9, 20), (4, 14, 20)]
    assert "accuracy_vs_step.png" in make_plots(records, tmp_path / "plots")


def test_a_run_without_a_curve_has_its_two_ends_and_fedpetuning_is_labelled_by_its_training() -> None:
    r = RunRecord("f", "fedpetuning", "done", results={"steps": 3, "before": _acc(1, 4), "after": _acc(2, 4)})
    r.config = {"fedpetuning": {"method": "grpo"}}
    assert r.curve_counts() == [(0, 1, 4), (3, 2, 4)] and r.label == "fedpetuning/grpo"


def _fedgrpo(name: str, k: int, correct: int, partition: str = "random") -> RunRecord:
    r = RunRecord(name, "fedgrpo", "done", results={"steps": 3, "after": _acc(correct, 10)})
    r.config = {"data": {"num_clients": k, "partition": partition}, "federation": {"experts_per_question": 1}}
    return r


def test_the_k_plot_draws_a_coverage_sweep_as_its_own_line_beside_the_random_one(tmp_path: Path) -> None:
    runs = [
        _fedgrpo("k1", 1, 4, "by-domain"),
        _fedgrpo("k3", 3, 6, "by-domain"),
        _fedgrpo("k3b", 3, 8, "by-domain"),
        _fedgrpo("r3", 3, 5),
        _fedgrpo("r5", 5, 7),
    ]
    label = runs[0].label
    assert k_lines(runs) == {
        (label, 1, "by-domain"): {1: [0.4], 3: [0.6, 0.8]},
        (label, 1, "random"): {3: [0.5], 5: [0.7]},
    }
    assert "accuracy_vs_k.png" in make_plots(runs, tmp_path / "plots")


def test_the_step_axis_names_the_runs_whose_step_is_a_fedavg_round() -> None:
    sft = RunRecord("f", "fedpetuning", "done", results={"steps": 3, "client_steps": 15})
    sft.config = {"fedpetuning": {"method": "sft"}}
    central = RunRecord("c", "central-grpo", "done", results={"steps": 100})
    assert step_xlabel([central]) == "training step"
    assert step_xlabel([central, sft]) == "training step (fedpetuning/sft: FedAvg round)"
