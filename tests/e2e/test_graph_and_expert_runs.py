"""Whole ``fedgrpo`` commands with the confidence graph and client experts, in real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from fedgrpo.config import load_config
from fedgrpo.selection import ConfidenceGraph
from tests.helpers import fedgrpo, metric_rows


def test_graph_smoke_run_routes_by_the_graph(tmp_path: Path) -> None:
    run_dir = tmp_path / "graph"
    proc = fedgrpo("run", "graph-smoke", f"run.output_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "confidence_graph.pt").exists()
    graph = ConfidenceGraph.load(run_dir / "confidence_graph.pt")
    assert graph.clients == ["client-0", "client-1", "client-2"] and graph.num_exemplars == 6
    results = json.loads((run_dir / "results.json").read_text())
    sel = results["selection"]
    assert sel["bytes_down"] > 0 and sel["bytes_up"] > 0
    assert sel["client_forward_passes"] == 3 * 6 * 2  # clients x exemplars x samples
    cfg = load_config("graph-smoke")
    m = cfg.federation.experts_per_question
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("fed/routed", "fed/reward_correctness", "fed/routed_domain_share", "fed/replacements"):
            assert key in row
        assert sum(row["fed/routed"].values()) == m * row["fed/questions"] + row["fed/replacements"]
        assert sorted(row["fed/competence"]) == graph.clients  # after the step's online updates
        assert all(0 <= v <= 1 for v in row["fed/competence"].values())
        assert 0 <= row["fed/routed_domain_share"] <= 1
        if row["fed/rewards_received"]:
            assert 0 <= row["fed/reward_correctness"] <= 1

    # --resume loads the saved graph instead of querying the clients again
    more = fedgrpo("run", "graph-smoke", f"run.output_dir={run_dir}", "--resume", "grpo.max_steps=4")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "loaded the confidence graph" in more.stderr
    assert json.loads((run_dir / "results.json").read_text())["selection"] == sel


def test_run_with_an_adversary_and_median_aggregation(tmp_path: Path) -> None:
    """The whole path from the command line: the named client lies in every reply, the server accepts
    its replies (they keep the protocol) and the audit sees the wrong rewards."""
    args = ["grpo.max_steps=1", "eval.before=false", "eval.after=false"]
    runs, stderr = {}, {}
    for name, extra in {"clean": [], "liar": ["clients.adversaries={client-1: always-high}"]}.items():
        run_dir = tmp_path / name
        fed = ["federation.experts_per_question=3", "federation.aggregation=median"]
        proc = fedgrpo("run", "smoke", f"run.output_dir={run_dir}", *fed, *args, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name], stderr[name] = metric_rows(run_dir)[0], proc.stderr
        assert runs[name]["fed/rejected_total"] == 0 and "fed/competence" not in runs[name]  # selector: all
    assert "client client-1 is a simulated adversary: always-high" in stderr["liar"]
    assert "simulated adversary" not in stderr["clean"]
    assert "client-1: always-high" in (tmp_path / "liar" / "config.yaml").read_text()
    assert runs["clean"]["fed/reward_correctness"] == 1.0  # honest answer-based scoring is exact
    assert runs["liar"]["fed/reward_correctness"] < 1.0
    assert runs["liar"]["fed/abstentions"] < runs["clean"]["fed/abstentions"]  # it judges what it cannot


def test_oracle_run_when_allowed(tmp_path: Path) -> None:
    run_dir = tmp_path / "oracle"
    proc = fedgrpo(
        "run",
        "smoke",
        f"run.output_dir={run_dir}",
        "federation.selector=oracle",
        "federation.allow_oracle=true",
        "grpo.max_steps=1",
        "eval.before=false",
        "eval.after=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = metric_rows(run_dir)[0]
    assert sum(row["fed/routed"].values()) == 2 * row["fed/questions"]
    assert row["fed/routed_domain_share"] > 0
    assert json.loads((run_dir / "results.json").read_text())["selection"] is None


def test_train_clients_command_then_a_no_ground_truth_run_reuses_the_adapters(tmp_path: Path) -> None:
    cache = tmp_path / "experts"
    settings = (f"clients.expert.cache_dir={cache}", "clients.expert.epochs=1")
    proc = fedgrpo("train-clients", "graph-smoke", *settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report) == ["client-0", "client-1", "client-2"]
    for row in report.values():
        assert row["steps"] >= 1 and Path(row["adapter"]).parent == cache

    run_dir = tmp_path / "run"
    proc = fedgrpo(
        "run",
        "graph-smoke",
        f"run.output_dir={run_dir}",
        "clients.expert.method=sft",
        *settings,
        "data.setting=no-ground-truth",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("cached at") == 3 and "LoRA SFT" not in proc.stderr
    split = json.loads((run_dir / "split.json").read_text())
    assert split["setting"] == "no-ground-truth"
    rows = metric_rows(run_dir)
    # No client holds a training question: nothing is scored by answers, only by client models (a
    # one-epoch tiny-random expert rarely writes an answer tag, so most of its evaluations abstain).
    methods = {k: sum(r["fed/methods"].get(k, 0) for r in rows) for k in ("answer", "model", "none")}
    assert methods["answer"] == 0 and methods["model"] + methods["none"] > 0
