"""The suite report's comparison from recorded question outcomes: seeds pooled as paired evidence,
Holm across the comparisons, the unpaired fallback said as such, stale rows shown but never counted."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fedgrpo.run.outcomes import DomainOutcomes, save_outcomes
from fedgrpo.suite.provenance import source_hash
from fedgrpo.suite.record import RECORD_FILES, copy_records
from fedgrpo.suite.report import write_report


def _run(
    folder: Path, name: str, method: str, seed: int, answers: str, qids: list[str] | None = None
) -> None:
    """A finished run whose after-evaluation answered ``answers`` (one 0/1 per question) of domain d;
    its outcomes recorded unless ``qids`` is None."""
    run = folder / "runs" / name
    run.mkdir(parents=True)
    n, correct = len(answers), answers.count("1")
    acc = {"domain": "d", "n": n, "correct": correct, "accuracy": correct / n, "ci_low": 0.0, "ci_high": 1.0}
    acc |= {
        "format_rate": 1.0,
        "majority_rate": 0.5,
        "answer_correct": correct,
        "answer_accuracy": correct / n,
    }
    acc |= {"answer_ci_low": 0.0, "answer_ci_high": 1.0}
    results = {"name": name, "method": method, "steps": 1, "train_seconds": 1.0, "before": None}
    (run / "results.json").write_text(json.dumps({**results, "after": {"d": acc}, "communication": {}}))
    selector = {"federation": {"selector": "confidence-graph"}} if method == "fedgrpo" else {}
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, **selector}))
    if qids is not None:
        bits = [c == "1" for c in answers]
        save_outcomes(run, "after", {"d": DomainOutcomes.of(qids, bits, bits, bits)})


def _suite(tmp_path: Path) -> Path:
    q = {s: [f"s{s}q{i}" for i in range(20)] for s in (0, 1)}
    # seed 0: b=6 (only graph right), c=1, a=5, d=8; seed 1: b=4, c=1, a=5, d=10
    graph = {0: "1" * 6 + "0" + "1" * 5 + "0" * 8, 1: "1" * 4 + "0" + "1" * 5 + "0" * 10}
    zero = {0: "0" * 6 + "1" + "1" * 5 + "0" * 8, 1: "0" * 4 + "1" + "1" * 5 + "0" * 10}
    for s in (0, 1):
        _run(tmp_path, f"graph__seed={s}", "fedgrpo", s, graph[s], q[s])
    _run(tmp_path, "zero__seed=0", "zero-shot", 0, zero[0], q[0])
    _run(tmp_path, "zero__seed=1", "zero-shot", 1, zero[1][::-1], q[1][::-1])  # paired by id, not place
    _run(tmp_path, "old", "central-grpo", 0, "1" * 10 + "0" * 10)  # a record from before outcomes.json
    _run(tmp_path, "dpsda", "dpsda-fl", 0, "0" * 20, q[0])
    _run(tmp_path, "fedpetuning", "fedpetuning", 0, "1" * 19 + "0", q[0])
    status = {
        name: {"method": method, "status": "done", "error": None, "wall_seconds": 1.0}
        for name, method in [
            *((f"graph__seed={s}", "fedgrpo") for s in (0, 1)),
            *((f"zero__seed={s}", "zero-shot") for s in (0, 1)),
            ("old", "central-grpo"),
            ("dpsda", "dpsda-fl"),
            ("fedpetuning", "fedpetuning"),
        ]
    }
    status["fedpetuning"]["code"] = {"commit": "abc1234", "source_hash": "0" * 16}  # not today's code
    status["zero__seed=0"]["code"] = {"commit": "def5678", "source_hash": source_hash("zero-shot")}
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    (tmp_path / "stale.yaml").write_text(yaml.safe_dump({"dpsda": "its synthetic samples had no answers"}))
    return tmp_path


def _row(report: str, first_cell: str) -> list[str]:
    section = report.split("against each run")[1].split("## ")[0]
    (line,) = [x for x in section.splitlines() if x.startswith(f"| {first_cell} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_report_pairs_questions_pools_seeds_corrects_with_holm_and_marks_stale_rows(
    tmp_path: Path,
) -> None:
    report = write_report(_suite(tmp_path), "Suite p").read_text()
    assert "## graph against each run" in report
    assert "graph 0.500 (20/40, 2 seed(s) pooled)" in report
    # both seeds pooled: b=10, c=2 over 40 pairs; exact McNemar 2 * 79 / 4096 = 0.0386; Holm over two
    zero = _row(report, "zero")
    assert zero[:7] == ["zero", "zero-shot", "2", "40", "0.300", "+0.200 [+0.04, +0.34]", "McNemar b=10, c=2"]
    old = _row(report, "old")
    unpaired = "unpaired: per-question outcomes not recorded"
    assert old[2:7] == ["1", "20", "0.500", "+0.050 [-0.24, +0.33]", unpaired]  # seed 0 only: 11/20
    # Holm over the two rows not stale: 0.0386 * 2 = 0.077 (a win no longer), then max(0.077, 0.752)
    assert zero[7:10] == ["0.039", "0.077", "tie"] and old[7:10] == ["0.752", "0.752", "tie"]
    # MDD: Connor's at discordance 12/40 over 40 pairs; unpaired (z_a + z_b) sqrt(2 * .525 * .475 / 20)
    assert zero[10] == "0.236" and old[10] == "0.442"
    for stale in ("dpsda", "fedpetuning"):
        row = _row(report, f"{stale} (stale)")
        assert row[8] == "-" and row[9] == "stale (not counted)"
    stale_rows = report.split("## Stale rows")[1].split("## ")[0]
    assert "| dpsda | dpsda-fl | its synthetic samples had no answers |" in stale_rows
    assert "the fedpetuning code changed since the run (ran at abc1234)" in stale_rows
    assert "zero__seed=0" not in stale_rows  # its recorded hash is today's
    assert "| dpsda (stale) | dpsda-fl |" in report.split("## Answer accuracy after training")[1]


def test_copy_records_keeps_what_the_report_reads(tmp_path: Path) -> None:
    suite = _suite(tmp_path / "suite")
    (suite / "runs" / "zero__seed=0" / "checkpoints").mkdir()  # not part of a record
    dest = tmp_path / "docs"
    copied = copy_records(suite, dest)
    assert len(copied) == 7 and (dest / "stale.yaml").exists()
    assert sorted(p.name for p in (dest / "runs" / "zero__seed=0").iterdir()) == sorted(
        f
        for f in RECORD_FILES
        if f not in ("metrics.jsonl", "curve.jsonl", "synthetic.jsonl")  # zero-shot trains nothing
    )
    assert write_report(dest, "t").read_text() == write_report(suite, "t").read_text()

    # records accumulate: a later suite folder holding other runs (e.g. run with --only) adds to them
    later = tmp_path / "later"
    _run(later, "extra__seed=0", "zero-shot", 0, "0110", ["q0", "q1", "q2", "q3"])
    (later / "suite.json").write_text(json.dumps({"runs": {"extra__seed=0": {"status": "done"}}}))
    (later / "stale.yaml").write_text("extra__seed=0: a reason\n")
    assert copy_records(later, dest) == ["extra__seed=0"]
    status = json.loads((dest / "suite.json").read_text())["runs"]
    assert len(status) == 8 and status["extra__seed=0"] == {"status": "done"}
    stale = yaml.safe_load((dest / "stale.yaml").read_text())
    assert stale["extra__seed=0"] == "a reason" and len(stale) > 1


def test_each_method_keeps_its_colour_and_runs_of_one_method_get_their_own_markers() -> None:
    from fedgrpo.suite.plots import OTHER_COLOURS, _styles, colour
    from fedgrpo.suite.record import RunRecord

    graph = {"federation": {"selector": "confidence-graph"}}
    runs = [RunRecord("a", "fedgrpo", "done", config=graph), RunRecord("b", "fedgrpo", "done", config=graph)]
    runs.append(RunRecord("z", "zero-shot", "done"))
    styles = _styles(runs)
    assert styles["a"][0] == styles["b"][0] == colour("fedgrpo/confidence-graph") != styles["z"][0]
    assert styles["a"][1] != styles["b"][1]
    assert _styles(runs[2:])["z"] == styles["z"]  # the same in a plot of other runs
    assert colour("fedgrpo/embedding") in OTHER_COLOURS  # a label without a set colour: fixed by its name
