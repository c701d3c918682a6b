"""Suite files: expansion into stably named runs, every entry validated before anything starts, and
the report (tables, failures, plots) made from run folders alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedgrpo.suite.report import write_report
from fedgrpo.suite.spec import SuiteError, load_suite, plan


def _suite(tmp_path: Path, **body: object) -> Path:
    path = tmp_path / "suite.yaml"
    suite = {"name": "t", "base": "smoke", "suite_dir": str(tmp_path / "out"), **body}
    path.write_text(yaml.safe_dump(suite))
    return path


def _plan(tmp_path: Path, **body: object) -> list:
    spec, folder = load_suite(_suite(tmp_path, **body))
    return plan(spec, folder)


def test_runs_are_crossed_with_the_sweeps_under_stable_names(tmp_path: Path) -> None:
    runs = _plan(
        tmp_path,
        overrides={"grpo.max_steps": 2},
        sweeps={"seed": [0, 1]},
        runs=[
            {"method": "zero-shot"},
            {"name": "graph", "method": "fedgrpo", "sweeps": {"data.num_clients": [2, 3]}},
        ],
    )
    assert [r.name for r in runs] == [
        "zero-shot__seed=0",
        "zero-shot__seed=1",
        "graph__seed=0__num_clients=2",
        "graph__seed=0__num_clients=3",
        "graph__seed=1__num_clients=2",
        "graph__seed=1__num_clients=3",
    ]
    last = runs[-1].config
    assert (last.seed, last.data.num_clients, last.grpo["max_steps"], last.method) == (1, 3, 2, "fedgrpo")
    assert last.output_dir == tmp_path / "out" / "runs" / "graph__seed=1__num_clients=3"


M_OVER_K = {"data.num_clients": 2, "federation.experts_per_question": 3}
K_TOO_LARGE = {"data.domains": ["sums_1digit"], "data.num_clients": 20}  # 200 distinct questions exist


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([{"method": "fedavg"}], r"run 'fedavg' \(runs\[0\] \(fedavg\)\).*method: Input should be"),
        (
            [{"method": "zero-shot"}, {"name": "m3", "method": "fedgrpo", "overrides": M_OVER_K}],
            r"run 'm3' \(runs\[1\] \(m3\)\).*\(M=3\) must be <= data.num_clients \(K=2\)",
        ),
        ([{"name": "bigk", "method": "fedgrpo", "overrides": K_TOO_LARGE}], r"run 'bigk'.*pool.*too small"),
        ([{"method": "zero-shot"}, {"method": "zero-shot"}], r"share names \['zero-shot'\]"),
        ([{"method": "fedgrpo", "sweeps": {"seed": []}}], r"sweep 'seed' has no values"),
    ],
    ids=["unknown-method", "m-greater-than-k", "k-too-large-for-data", "duplicate-names", "empty-sweep"],
)
def test_a_suite_that_cannot_run_fails_naming_the_entry(tmp_path: Path, runs: list, message: str) -> None:
    with pytest.raises(SuiteError, match="(?s)" + message):
        _plan(tmp_path, runs=runs)
    assert not (tmp_path / "out").exists()  # nothing started


SUITES = sorted((Path(__file__).parents[2] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_shipped_suite_expands_and_validates(path: Path) -> None:
    """What ``fedgrpo suite FILE --check`` does: every run's config valid, its split drawable."""
    spec, folder = load_suite(path)
    runs = plan(spec, folder)
    assert runs and len({r.name for r in runs}) == len(runs)


def test_the_budget_suite_shares_the_evidence_suites_questions_seed_by_seed() -> None:
    """suites/budget.yaml's runs are paired with the evidence suite's FedGRPO records: at each seed
    everything but the local steps (and the names) is the evidence suite's fedpetuning-grpo config."""
    root = Path(__file__).parents[2] / "suites"
    evidence = {r.name: r.config for r in plan(*load_suite(root / "evidence.yaml"))}
    budget = plan(*load_suite(root / "budget.yaml"))
    assert [r.config.seed for r in budget] == [0, 1, 2]
    for run in budget:
        theirs = evidence[run.name.replace("fedpetuning-grpo-100", "fedpetuning-grpo")]
        assert run.config.data == theirs.data and run.config.grpo == theirs.grpo
        assert (run.config.fedpetuning.local_steps, theirs.fedpetuning.local_steps) == (2, 5)
        mine = run.config.model_dump(exclude={"name", "run", "fedpetuning"})
        assert mine == theirs.model_dump(exclude={"name", "run", "fedpetuning"})


def test_a_malformed_suite_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="runs: Field required"):
        load_suite(_suite(tmp_path))
    with pytest.raises(SuiteError, match=r"runs.0.overide: Extra inputs"):
        load_suite(_suite(tmp_path, runs=[{"method": "zero-shot", "overide": {}}]))


# -- the report, from fixture run folders ----------------------------------------------------------------
def _accuracy(correct: int, n: int, lo: float, hi: float) -> dict:
    acc = correct / n
    return {
        "domain": "d",
        "n": n,
        "correct": correct,
        "accuracy": acc,
        "ci_low": lo,
        "ci_high": hi,
        "format_rate": 1.0,
        "majority_rate": 0.5,
        "answer_correct": correct,
        "answer_accuracy": acc,
        "answer_ci_low": lo,
        "answer_ci_high": hi,
    }


def _fixture_run(root: Path, name: str, method: str, selector: str, k: int, correct: int, up: int) -> None:
    run = root / "runs" / name
    run.mkdir(parents=True)
    before = {"sums": _accuracy(2, 10, 0.06, 0.51)}
    after = {"sums": _accuracy(correct, 10, 0.2, 0.8)}
    results = {
        "name": name,
        "method": method,
        "steps": 4,
        "train_seconds": 12.0,
        "before": before,
        "after": after,
        "communication": {"fed/bytes_down": 1000, "fed/bytes_up": up},
    }
    (run / "results.json").write_text(json.dumps(results))
    config = {"federation": {"selector": selector}, "data": {"num_clients": k, "setting": "ground-truth"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"step": s, "fed/reward_mean": 0.1 * s, "fed/reward_correctness": 0.75} for s in (1, 2, 3, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_report_tables_failures_and_plots(tmp_path: Path) -> None:
    _fixture_run(tmp_path, "graph__k2", "fedgrpo", "confidence-graph", 2, 6, 300)
    _fixture_run(tmp_path, "random__k3", "fedgrpo", "random", 3, 5, 200)
    status = {
        "graph__k2": {"method": "fedgrpo", "status": "done", "error": None, "wall_seconds": 30.0},
        "random__k3": {"method": "fedgrpo", "status": "done", "error": None, "wall_seconds": 31.0},
        "broken": {"method": "central-grpo", "status": "failed", "error": "OSError: no model"},
    }
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    report = write_report(tmp_path, "Suite t").read_text()
    assert "2 of 3 runs have results; 1 failed." in report
    assert "| graph__k2 | fedgrpo/confidence-graph | 0.600 [0.20, 0.80] | 0.600 [0.31, 0.83] |" in report
    assert "| random__k3 | fedgrpo/random | 4 | 1,000 | 200 | 12 | 31 |" in report
    assert "| broken | central-grpo | OSError: no model |" in report
    assert "0.200 [0.06, 0.51] -> 0.600 [0.20, 0.80]" in report
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "OSError: no model" in html
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == [
        "accuracy_vs_bytes.png",
        "accuracy_vs_k.png",
        "accuracy_vs_step.png",
        "reward_correctness.png",
        "reward_vs_step.png",
    ]
    for name in plots:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}](plots/{name})" in report


def test_suite_report_remakes_the_html_from_committed_records_and_runs_nothing(tmp_path: Path) -> None:
    """``fedgrpo suite SUITE --report DIR``: what a committed results folder (docs/results/NAME, with
    no report.html, which is not committed) needs to show its report again."""
    from fedgrpo.cli import main

    records = tmp_path / "results"
    _fixture_run(records, "graph__k2", "fedgrpo", "confidence-graph", 2, 6, 300)
    _fixture_run(records, "random__k3", "fedgrpo", "random", 3, 5, 200)
    status = {n: {"method": "fedgrpo", "status": "done", "error": None} for n in ("graph__k2", "random__k3")}
    (records / "suite.json").write_text(json.dumps({"runs": status}))
    suite = _suite(tmp_path, runs=[{"method": "fedgrpo"}])

    assert main(["suite", str(suite), "--report", str(records)]) == 0
    html = (records / "report.html").read_text()
    assert "<table>" in html and "graph__k2" in html and "0.600 [0.20, 0.80]" in html
    assert not (tmp_path / "out").exists()  # the suite's own folder: nothing ran
    report = (records / "report.md").read_text()

    # A committed suite that kept only its report (a done run's folder gone): report.md stays, the
    # HTML is remade from it.
    (records / "runs" / "random__k3" / "results.json").unlink()
    (records / "report.html").unlink()
    assert main(["suite", str(suite), "--report", str(records)]) == 0
    assert (records / "report.md").read_text() == report
    assert "random__k3" in (records / "report.html").read_text()


def test_a_report_of_a_folder_without_records_fails_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from fedgrpo.cli import main

    suite = _suite(tmp_path, runs=[{"method": "fedgrpo"}])
    assert main(["suite", str(suite), "--report", str(tmp_path / "empty")]) == 2
    assert "no suite records" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()


def test_docs_into_a_folder_that_cannot_be_made_fails_with_a_message(tmp_path: Path, capsys) -> None:
    from fedgrpo.cli import main

    (tmp_path / "file").write_text("")
    assert main(["docs", str(tmp_path / "file" / "docs")]) == 1
    assert "cannot write the references" in capsys.readouterr().err


def test_newcombes_interval_for_a_difference_matches_the_published_examples() -> None:
    """Newcombe (1998), Statistics in Medicine 17, Table II, method 10."""
    from fedgrpo.run.intervals import difference_interval

    for counts, (low, high) in [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ]:
        d, lo, hi = difference_interval(*counts)
        assert d == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
        assert (lo, hi) == pytest.approx((low, high), abs=1e-4), counts  # the paper gives 4 decimals


def test_the_report_says_where_fedgrpo_wins_ties_or_loses(tmp_path: Path) -> None:
    runs = {  # name: (method, selector, correct of 100, bytes up)
        "graph": ("fedgrpo", "confidence-graph", 60, 300),
        "zero": ("zero-shot", None, 30, 0),
        "random": ("fedgrpo", "random", 55, 200),
        "central": ("central-grpo", None, 80, 9000),
    }
    status = {}
    for name, (method, selector, correct, up) in runs.items():
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        after = {"sums": _accuracy(correct, 100, 0.0, 1.0)}
        comm = {"fed/bytes_down": 1000 if up else 0, "fed/bytes_up": up}
        results = {"name": name, "method": method, "steps": 4, "train_seconds": 1.0, "after": after}
        (run / "results.json").write_text(json.dumps({**results, "before": after, "communication": comm}))
        config = {"federation": {"selector": selector}} if selector else {}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        status[name] = {"method": method, "status": "done", "error": None, "wall_seconds": 1.0}
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    report = write_report(tmp_path, "Suite t").read_text()
    assert "## graph against each run" in report  # the confidence graph with ground truth is the reference
    # no outcomes recorded: the unpaired z test, Holm over the three comparisons, the unpaired MDD
    unpaired = "unpaired: per-question outcomes not recorded"
    for cells in [
        ["zero", "zero-shot", "1", "100", "0.300", "+0.300 [+0.16, +0.42]", unpaired, "2.0e-05", "6.0e-05"]
        + ["win", "0.197", "0", "-"],
        ["random", "fedgrpo/random", "1", "100", "0.550", "+0.050 [-0.09, +0.18]", unpaired, "0.474"]
        + ["0.474", "tie", "0.196", "1,200", "0.9x"],
        ["central", "central-grpo", "1", "100", "0.800", "-0.200 [-0.32, -0.07]", unpaired, "0.002"]
        + ["0.004", "loss", "0.182", "10,000", "7.7x"],
    ]:
        assert "| " + " | ".join(cells) + " |" in report


def test_the_report_pools_seeds_by_clients_and_experts(tmp_path: Path) -> None:
    runs = {  # name: (K, M, seed, correct of 40)
        "k2__s0": (2, 2, 0, 20),
        "k2__s1": (2, 2, 1, 10),
        "k5__s0": (5, 2, 0, 30),
        "m3__s0": (5, 3, 0, 12),
    }
    status = {}
    for name, (k, m, seed, correct) in runs.items():
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        after = {"sums": _accuracy(correct, 40, 0.0, 1.0)}
        results = {"name": name, "method": "fedgrpo", "steps": 4, "train_seconds": 1.0, "after": after}
        (run / "results.json").write_text(json.dumps({**results, "communication": {}}))
        config = {
            "seed": seed,
            "federation": {"selector": "confidence-graph", "experts_per_question": m},
            "data": {"num_clients": k},
        }
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        status[name] = {"method": "fedgrpo", "status": "done", "error": None, "wall_seconds": 1.0}
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    report = write_report(tmp_path, "Sweeps").read_text()
    section = report.split("## By clients K and experts per question M")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| fedgrpo")]
    # K=2's two seeds pooled: 30 of 80; then K=5 at M=2 and at M=3, each its own row
    assert rows == [
        "| fedgrpo/confidence-graph | 2 | 2 | 2 | 0.375 [0.28, 0.48] | 0.500, 0.250 |",
        "| fedgrpo/confidence-graph | 5 | 2 | 1 | 0.750 [0.60, 0.86] | 0.750 |",
        "| fedgrpo/confidence-graph | 5 | 3 | 1 | 0.300 [0.18, 0.45] | 0.300 |",
    ]
