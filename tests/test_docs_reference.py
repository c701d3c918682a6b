"""The config and metrics references are generated from the code (``fedgrpo docs``): the committed
files must be what the generator writes, and the metrics table must name exactly what the code logs."""

from __future__ import annotations

from pathlib import Path

from fedgrpo.cli import write_references
from fedgrpo.config.reference import config_reference
from fedgrpo.run.metric_names import FED_METRICS, metrics_reference, tracked
from fedgrpo.server.stats import RoundStats
from fedgrpo.simulation.audit import RoutingAudit
from fedgrpo.simulation.partition import FederatedSplit
from tests.helpers import load_script

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "run `fedgrpo docs` and commit the result"


def test_the_committed_config_reference_is_what_the_code_generates() -> None:
    assert (DOCS / "config.md").read_text() == config_reference(), REGENERATE


def test_the_committed_metrics_reference_is_what_the_code_generates() -> None:
    assert (DOCS / "metrics.md").read_text() == metrics_reference(), REGENERATE


def test_every_config_key_has_a_description() -> None:
    missing = [
        line for line in config_reference().splitlines() if line.startswith("| `") and line.endswith("|  |")
    ]
    assert not missing, missing


def test_fedgrpo_docs_writes_both_files(tmp_path: Path) -> None:
    written = write_references(tmp_path)
    assert [p.name for p in written] == ["config.md", "metrics.md"]
    assert (tmp_path / "metrics.md").read_text() == metrics_reference()


def test_the_metrics_table_names_exactly_what_a_round_and_the_audit_log() -> None:
    round_keys = set(RoundStats().summary())
    split = FederatedSplit(clients={}, train_questions=[], auxiliary=[], heldout={}, client_domains={})
    audit_keys = set(RoutingAudit(split).summary([]))
    by_source = {
        s: {k for k, m in FED_METRICS.items() if m.source == s} for s in ("round", "audit", "selector")
    }
    assert by_source["round"] == round_keys
    assert by_source["audit"] == audit_keys
    assert by_source["selector"] == {"fed/competence"}


def test_only_known_scalar_metrics_reach_the_trackers() -> None:
    assert tracked("fed/bytes_up", 12) and tracked("fed/reward_mean", 0.5)
    assert not tracked("fed/reward_mean", None)  # no reward came back: nothing to plot
    assert not tracked("fed/routed", {"client-0": 2})  # a mapping stays in metrics.jsonl
    assert not tracked("fed/not_a_metric", 1.0)
    assert not tracked("fed/rounds", True)


def test_the_results_page_tables_are_what_the_committed_records_give() -> None:
    """docs/results.md's generated tables and the README's result sentences
    (``python scripts/results_tables.py``) match the records."""
    tables = load_script("scripts/results_tables.py")
    page = (DOCS / "results.md").read_text()
    assert tables.rendered(page) == page, "run python scripts/results_tables.py and commit the result"
    readme = tables.README.read_text()
    assert tables.rendered(readme, tables.README_BLOCKS, tables.README) == readme


def test_the_readme_says_win_tie_or_loss_from_the_corrected_paired_test() -> None:
    """Each baseline's sentence follows its comparison row: the verdict from the Holm-corrected p and
    the difference's sign, the size the right way round, and the power where it falls short."""
    tables = load_script("scripts/results_tables.py")
    from fedgrpo.suite.comparison import Row

    def row(d: tuple[float, float, float], holm: float, mdd: float, seeds: int = 3, stale=None) -> Row:
        name = "central-grpo"
        return Row(name, name, seeds, 1080, 0.4, d, "McNemar", holm, mdd, 0.0, stale, holm)

    win = tables._sentence("central-grpo", row((0.06, 0.03, 0.09), 0.001, 0.043))
    assert "FedGRPO is better, by 0.060 [0.03, 0.09]" in win and "1,080 paired questions (3 seeds" in win
    early = tables._sentence("central-grpo", row((0.17, 0.12, 0.21), 0.001, 0.071, seeds=1))
    assert "FedGRPO is better" in early and "1 of 3 seeds so far" in early and "underpowered" not in early
    loss = tables._sentence("central-grpo", row((-0.06, -0.09, -0.03), 0.001, 0.043))
    assert "central-grpo is better, by 0.060 [0.03, 0.09]" in loss
    tie = tables._sentence("central-grpo", row((0.01, -0.02, 0.04), 0.6, 0.043))
    assert "a tie: FedGRPO minus central-grpo is +0.010 [-0.02, +0.04]" in tie and "underpowered" not in tie
    weak = tables._sentence("central-grpo", row((0.01, -0.05, 0.07), 0.6, 0.074, seeds=1))
    assert "underpowered so far: it detects 0.074" in weak
    stale = tables._sentence("central-grpo", row((0.3, 0.2, 0.4), 0.001, 0.043, stale="older code"))
    assert "not counted" in stale and "better" not in stale
    assert "recorded; FedGRPO not yet" in tables._sentence("zero-shot", None, frozenset({"zero-shot"}))
    assert "not yet recorded" in tables._sentence("dpsda-fl", None)


def test_the_in_short_sentence_groups_the_verdicts_and_prices_the_losses() -> None:
    """One sentence with every verdict: beats, ties, trails in that order, a stale row in none, and
    the bytes of each baseline FedGRPO trails beside FedGRPO's own."""
    tables = load_script("scripts/results_tables.py")
    from fedgrpo.suite.comparison import Row

    def row(name: str, d: float, holm: float, bytes_: float = 0.0, stale=None) -> Row:
        return Row(
            name, name, 3, 1080, 0.4, (d, d - 0.02, d + 0.02), "McNemar", holm, 0.04, bytes_, stale, holm
        )

    rows = {
        "zero-shot": row("zero-shot", 0.1, 1e-9),
        "central-grpo": row("central-grpo", 0.01, 0.4),
        "fedpetuning-sft": row("fedpetuning-sft", -0.1, 1e-9, 2e9),
        "dpsda-fl": row("dpsda-fl", 0.1, 1e-9, stale="older code"),
        "local-only": row("local-only", 0.04, 1e-4),
    }
    said = tables._in_short(rows, 50_000.0)
    assert said.startswith("In short: FedGRPO beats zero-shot and local-only; ties central-grpo; ")
    assert (
        "trails fedpetuning-sft (bytes on the wire per run: FedGRPO 50,000, fedpetuning-sft 2,000,000,000)"
        in said
    )
    assert "dpsda-fl" not in said and "fedpetuning-grpo" not in said
    assert tables._in_short({}, 0.0) == "In short: no baseline has a verdict yet."


def test_the_budget_table_counts_each_runs_sampled_completions_from_its_config() -> None:
    """FedGRPO: 100 steps x 8 completions; the evidence fedpetuning-grpo: 10 rounds x 5 clients x 5
    local steps x 8 (scripts/results_tables.py's budget table, from the committed records)."""
    tables = load_script("scripts/results_tables.py")
    lines = tables.budget().splitlines()
    assert lines[2].startswith("| FedGRPO (`fedgrpo-graph`) | 800 | 3 |")
    assert lines[3].startswith("| fedpetuning-grpo | 2,000 | 3 |")
