"""The tables of docs/results.md and the README's result sentences, made from the committed run
records under docs/results/ alone.

Each block sits in its page between ``<!-- table: NAME -->`` and ``<!-- end: NAME -->``; this script
rewrites them, or with ``--check`` exits 1 when a page differs from the records
(``tests/test_docs_reference.py`` runs the check).

    python scripts/results_tables.py            # rewrite the blocks in docs/results.md and README.md
    python scripts/results_tables.py --check    # fail if they drift from the records
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Set as AbstractSet
from pathlib import Path
from statistics import mean

from fedgrpo.run.intervals import difference_interval, wilson_interval
from fedgrpo.suite import markdown
from fedgrpo.suite.comparison import Row, compare, comparison_rows, format_difference, format_p, with_holm
from fedgrpo.suite.record import RunRecord, pooled_counts
from fedgrpo.suite.report import collect

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
EVIDENCE = ROOT / "docs" / "results" / "evidence"
BUDGET = ROOT / "docs" / "results" / "budget"  # suites/budget.yaml: fedpetuning-grpo at FedGRPO's budget
SWEEPS = ROOT / "docs" / "results" / "sweeps"
COVERAGE = "coverage"  # the sweeps suite's coverage runs: client k holds domain k alone
MDD_GOAL = 0.05  # issue 24: the comparison must detect 5 points
SEEDS_GOAL = 3

# The evidence suite's baselines in the order the README gives them, each said in a few words.
BASELINES = {
    "zero-shot": "the policy before any training",
    "central-grpo": "GRPO with every organisation's labelled data pooled at the server",
    "fedpetuning-sft": "FedAvg of LoRA adapters, each trained by SFT on one organisation's data",
    "fedpetuning-grpo": "FedAvg of LoRA adapters, each trained by GRPO on one organisation's data",
    "dpsda-fl": "GRPO on Private Evolution's differentially private synthetic questions, their answers "
    "solved from the questions: a favourable upper bound",
    "local-only": "FedGRPO with the rewards of one organisation alone, the most competent",
}


def _acc(r: RunRecord) -> str:
    acc, low, high = r.overall()  # type: ignore[misc]
    return f"{acc:.3f} [{low:.2f}, {high:.2f}]"


def _minus(r: RunRecord, ref: RunRecord) -> str:
    return format_difference(*difference_interval(*r.answer_counts(), *ref.answer_counts()))  # type: ignore[misc]


def _correctness(r: RunRecord) -> str:
    values = [m["fed/reward_correctness"] for m in r.metrics if m.get("fed/reward_correctness") is not None]
    return f"{mean(values):.3f}" if values else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown.table(header, rows))


def sweeps() -> str:
    """K and M, every seed's held-out answers pooled, with where the rewards came from and the bytes."""
    groups: dict[tuple[int, int], list[RunRecord]] = {}
    for r in _sweeps():
        if r.group.startswith(COVERAGE):  # another partition: its own table
            continue
        groups.setdefault((r.num_clients, r.experts_per_question), []).append(r)  # type: ignore[arg-type]
    rows = []
    for (k, m), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r.seed or 0)
        correct, n = pooled_counts(runs)
        low, high = wilson_interval(correct, n)
        methods = [r.results["communication"]["fed/methods"] for r in runs]  # type: ignore[index]
        checked = sum(x.get("answer", 0) for x in methods) / sum(sum(x.values()) for x in methods)
        flat = mean(r.results["communication"]["fed/zero_spread_share"] for r in runs)  # type: ignore[index]
        kb = mean(r.bytes_total() for r in runs) / 1000
        per_seed = " / ".join(f"{r.overall()[0]:.3f}" for r in runs)  # type: ignore[index]
        rows.append(
            [str(k), str(m), f"{correct / n:.3f} [{low:.2f}, {high:.2f}]", per_seed]
            + [f"{checked:.2f}", f"{flat:.2f}", f"{kb:.1f} KB"]
        )
    header = ["K", "M", "answer accuracy, 3 seeds pooled", "seed 0 / 1 / 2", "answer-checked items"]
    return _table([*header, "flat groups", "bytes per run"], rows)


@functools.cache  # two tables read the one folder
def _sweeps() -> list[RunRecord]:
    return collect(SWEEPS)


def _domain_cell(runs: list[RunRecord], domain: str) -> str:
    cells = [(r.results or {}).get("after", {}).get(domain) or {} for r in runs]
    correct, n = sum(c.get("answer_correct", 0) for c in cells), sum(c.get("n", 0) for c in cells)
    return f"{correct / n:.3f}" if n else "-"


def coverage() -> str:
    """The coverage K sweep: client k holds domain k alone, so each added client brings a domain no
    one else has; each K against the largest, paired on the shared held-out questions, Holm-corrected."""
    groups: dict[int, list[RunRecord]] = {}
    for r in _sweeps():
        if r.group.startswith(COVERAGE) and r.answer_counts() and r.num_clients:
            groups.setdefault(r.num_clients, []).append(r)
    if not groups:
        return "Not yet recorded: `fedgrpo suite suites/sweeps.yaml --only 'coverage*'`."
    top = max(groups)
    domains = [str(d) for d in groups[top][0].config.get("data", {}).get("domains", [])]
    others = [k for k in groups if k != top]
    rows = dict(zip(others, with_holm([compare(groups[top], groups[k]) for k in others]), strict=True))
    body = []
    for k, runs in sorted(groups.items()):
        correct, n = pooled_counts(runs)
        low, high = wilson_interval(correct, n)
        cells = [", ".join(domains[: min(k, len(domains))]), str(len(runs))]
        cells += [_domain_cell(runs, d) for d in domains] + [f"{correct / n:.3f} [{low:.2f}, {high:.2f}]"]
        row = rows.get(k)
        if row is None:
            cells += ["(the reference)", "", "", ""]
        else:
            mdd = "-" if row.mdd is None else f"{row.mdd:.3f}"
            cells += [format_difference(*row.difference), row.test, format_p(row.holm), mdd]
        body.append([str(k), *cells])
    header = ["K", "domains held", "seeds", *domains, "all domains"]
    return _table([*header, f"K={top} minus it", "test", "Holm p", "MDD"], body)


@functools.cache  # two tables read the one folder
def _trust() -> tuple[RunRecord, list[RunRecord]]:
    records = collect(ROOT / "docs" / "results" / "trust")
    clean = next(r for r in records if r.name == "clean")
    return clean, [r for r in records if r is not clean]


def poisoning() -> str:
    clean, runs = _trust()
    rows = [["none (clean)", "mean", "off", _acc(clean), "", _correctness(clean)]]
    for r in runs:
        liars = r.config["clients"]["adversaries"]
        share = r.config["federation"].get("canaries", {}).get("share", 0)  # runs before canaries: off
        if not liars and not share:
            continue
        who = ", ".join(f"{c} {b}" for c, b in sorted(liars.items())) or "none"
        aggregation = r.config["federation"]["aggregation"]
        canaries = f"{share:g}" if share else "off"
        rows.append([who, aggregation, canaries, _acc(r), _minus(r, clean), _correctness(r)])
    header = ["liar(s)", "aggregation", "canaries", "answer accuracy", "minus clean", "reward correctness"]
    return _table(header, rows)


def privacy() -> str:
    clean, runs = _trust()
    rows = [["none (clean)", _acc(clean), "", _correctness(clean), ""]]
    dp = [r for r in runs if r.config["clients"]["privacy"]["enabled"]]
    for r in sorted(dp, key=lambda r: -r.config["clients"]["privacy"]["epsilon"]):
        spent = [c["epsilon"] for c in r.results["privacy"].values()]  # type: ignore[index]
        eps = r.config["clients"]["privacy"]["epsilon"]
        span = f"{min(spent):,.0f} to {max(spent):,.0f}"
        rows.append([f"{eps:g}", _acc(r), _minus(r, clean), _correctness(r), span])
    header = ["epsilon per value", "answer accuracy", "minus clean", "reward correctness"]
    return _table([*header, "epsilon composed per client (no cap)"], rows)


def per_example_privacy() -> str:
    """The privacy suite (docs/results/privacy): accuracy against each run's per-example epsilon,
    the largest over its clients, from results.json (issue 25). Until its own clean run is recorded,
    the trust suite's (the same base and overrides) is the reference, and the row says so."""
    records = [r for r in collect(ROOT / "docs" / "results" / "privacy") if r.answer_counts()]
    clean = next((r for r in records if not r.config["clients"]["privacy"]["enabled"]), None)
    label = "none (clean)" if clean else "none (the trust suite's clean)"
    clean = clean or _trust()[0]
    rows = [[label, "", "", "", "", _acc(clean), "", _correctness(clean)]]
    dp = [r for r in records if r.config["clients"]["privacy"]["enabled"]]
    for r in sorted(dp, key=lambda r: -r.config["clients"]["privacy"]["budget_epsilon"]):
        setting, clients = r.config["clients"]["privacy"], r.results["privacy"].values()  # type: ignore[index]
        at_budget = sum(c["examples_at_budget"] for c in clients)
        charged = sum(c["examples_charged"] for c in clients)
        uncovered = sum(c["model_releases_uncovered"] for c in clients)
        worst = max(c["per_example_epsilon_max"] for c in clients)
        shown = "" if setting.get("hide_membership", True) else " (membership shown)"
        rows.append(
            [f"{setting['epsilon']:g}{shown}", f"{setting['budget_epsilon']:g}", f"{worst:.2f}"]
            + [f"{at_budget} of {charged}", f"{uncovered:,}", _acc(r), _minus(r, clean), _correctness(r)]
        )
    header = ["epsilon per value", "budget per example", "per-example epsilon max", "examples at budget"]
    header += ["model releases not covered", "answer accuracy", "minus clean", "reward correctness"]
    return _table(header, rows)


@functools.cache  # the tables and the sentences read the one folder
def _evidence_records() -> list[RunRecord]:
    return collect(EVIDENCE) if EVIDENCE.exists() else []


@functools.cache
def _evidence() -> tuple[str, dict[str, Row], list[RunRecord], set[str]]:
    """The evidence suite's reference group, its comparison rows by group, the reference's runs (one
    per seed), and every group recorded (a baseline can be in before FedGRPO is)."""
    records = _evidence_records()
    recorded = {r.group for r in records if r.answer_counts()}
    found = comparison_rows(records)
    if found is None:
        return "fedgrpo-graph", {}, [], recorded
    ref, refs, rows = found
    return ref.group, {row.group: row for row in rows}, refs, recorded


def _missing(group: str, recorded: AbstractSet[str]) -> str:
    return "recorded; FedGRPO not yet" if group in recorded else "not yet recorded"


def evidence() -> str:
    """FedGRPO against each baseline of the evidence suite: paired, seeds pooled, Holm-corrected."""
    _, rows, _, recorded = _evidence()
    body = []
    for group in BASELINES:
        row = rows.get(group)
        if row is None:
            body.append([group, _missing(group, recorded), *[""] * 7])
            continue
        mdd = "-" if row.mdd is None else f"{row.mdd:.3f}"
        body.append(
            [group, str(row.seeds), f"{row.n:,}", f"{row.accuracy:.3f}", format_difference(*row.difference)]
            + [format_p(row.p), format_p(row.holm), mdd, row.verdict]
        )
    header = ["baseline", "seeds", "paired questions", "its answer accuracy", "FedGRPO minus it"]
    return _table([*header, "McNemar p", "Holm p", "MDD", "verdict"], body)


def _sentence(group: str, row: Row | None, recorded: AbstractSet[str] = frozenset()) -> str:
    """The README's sentence for one baseline: win, tie or loss, its size, and its power."""
    name = f"**{group}** ({BASELINES[group]})"
    if row is None:
        return f"- {name}: {_missing(group, recorded)}."
    if row.stale:
        return f"- {name}: stale, {row.stale}; not counted."
    d, low, high = row.difference
    if row.verdict == "win":
        said = f"FedGRPO is better, by {d:.3f} [{low:.2f}, {high:.2f}]"
    elif row.verdict == "loss":
        said = f"{group} is better, by {-d:.3f} [{-high:.2f}, {-low:.2f}]"
    else:
        said = f"a tie: FedGRPO minus {group} is {format_difference(d, low, high)}"
    seeds = f"{row.seeds} seed{'s' if row.seeds > 1 else ''}"
    said += f" over {row.n:,} paired questions ({seeds}, Holm p {format_p(row.holm)})"
    if row.verdict == "tie" and row.mdd is not None and row.mdd > MDD_GOAL:  # a win needs no more power
        said += f"; underpowered so far: it detects {row.mdd:.3f}, not {MDD_GOAL}"
    elif row.seeds < SEEDS_GOAL:
        said += f"; {row.seeds} of {SEEDS_GOAL} seeds so far"
    return f"- {name}: {said}."


def evidence_sentences() -> str:
    """One sentence per baseline, win, tie or loss, from the evidence suite's paired comparison."""
    ref, rows, refs, recorded = _evidence()
    seeds = len(refs)
    lead = (
        f"FedGRPO (`{ref}`, {seeds} seed{'s' if seeds != 1 else ''} recorded) against each baseline of "
        "`suites/evidence.yaml`, question by question on the same held-out questions (exact McNemar, "
        "Holm-corrected; a win or a loss is a corrected p below 0.05):"
    )
    said = [_sentence(g, rows.get(g), recorded) for g in BASELINES]
    ref_bytes = mean(r.bytes_total() for r in refs) if refs else 0.0
    return "\n".join([lead, "", *said, "", _in_short(rows, ref_bytes)])


def _names(groups: list[str]) -> str:
    return groups[0] if len(groups) == 1 else ", ".join(groups[:-1]) + " and " + groups[-1]


def _in_short(rows: dict[str, Row], ref_bytes: float) -> str:
    """The verdicts in one sentence, and how many bytes each baseline FedGRPO loses to moved."""
    by: dict[str, list[str]] = {"win": [], "tie": [], "loss": []}
    for group in BASELINES:
        row = rows.get(group)
        if row is not None and row.verdict in by:
            by[row.verdict].append(group)
    words = {"win": "beats", "tie": "ties", "loss": "trails"}
    parts = [f"{words[v]} {_names(groups)}" for v, groups in by.items() if groups]
    if not parts:
        return "In short: no baseline has a verdict yet."
    costs = [f"{g} {rows[g].bytes:,.0f}" for g in by["loss"] if rows[g].bytes]
    cost = f" (bytes on the wire per run: FedGRPO {ref_bytes:,.0f}, {', '.join(costs)})" if costs else ""
    return f"In short: FedGRPO {'; '.join(parts)}{cost}."


def _completions(r: RunRecord) -> int:
    """The completions a GRPO run sampled in training: its steps (every client's local steps for
    Fedpetuning) times its batch of completions."""
    assert r.results is not None
    if r.method == "fedpetuning":
        return r.results["client_steps"] * r.config["fedpetuning"]["batch_size"]
    return r.results["steps"] * r.config["grpo"]["per_device_train_batch_size"]


def budget() -> str:
    """fedpetuning-grpo at its evidence-suite budget and at FedGRPO's, each paired with FedGRPO's
    evidence records on the same held-out questions; two comparisons, Holm-corrected between them."""
    _, _, refs, _ = _evidence()
    if not refs:
        return "No FedGRPO record in docs/results/evidence yet."
    groups = {
        "fedpetuning-grpo": [r for r in _evidence_records() if r.group == "fedpetuning-grpo"],
        "fedpetuning-grpo-100": collect(BUDGET) if BUDGET.exists() else [],
    }
    groups = {g: [r for r in runs if r.answer_counts()] for g, runs in groups.items()}
    rows = with_holm([compare(refs, runs) for runs in groups.values() if runs])
    by_group = {row.group: row for row in rows}
    correct, n = pooled_counts(refs)
    first = ["FedGRPO (`fedgrpo-graph`)", f"{_completions(refs[0]):,}", str(len(refs)), f"{correct / n:.3f}"]
    body = [[*first, "", "", "", ""]]
    for group, runs in groups.items():
        row = by_group.get(group)
        if row is None:
            body.append([group, "", "not yet recorded", "", "", "", "", ""])
            continue
        mdd = "-" if row.mdd is None else f"{row.mdd:.3f}"
        said = [f"{row.accuracy:.3f}", format_difference(*row.difference), format_p(row.holm), mdd]
        body.append([group, f"{_completions(runs[0]):,}", str(row.seeds), *said, row.verdict])
    header = ["run", "completions sampled", "seeds", "its answer accuracy", "FedGRPO minus it", "Holm p"]
    return _table([*header, "MDD", "verdict"], body)


TABLES = {
    "evidence": evidence,
    "evidence-sentences": evidence_sentences,
    "budget": budget,
    "sweeps": sweeps,
    "coverage": coverage,
    "poisoning": poisoning,
    "privacy": privacy,
    "per-example-privacy": per_example_privacy,
}


README_BLOCKS = {"evidence-sentences": evidence_sentences}
PAGES = {PAGE: TABLES, README: README_BLOCKS}


def rendered(page: str, blocks: dict | None = None, where: Path = PAGE) -> str:
    """``page`` with every block of ``blocks`` (docs/results.md's by default) rewritten from the records."""
    for name, make in (TABLES if blocks is None else blocks).items():
        pattern = re.compile(rf"(<!-- table: {name} -->\n).*?(\n<!-- end: {name} -->)", re.S)
        if not pattern.search(page):
            raise SystemExit(f"{where}: no block for table {name!r}")
        page = pattern.sub(lambda m, text=make(): m.group(1) + text + m.group(2), page)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page differs from the records")
    args = parser.parse_args()
    drift = 0
    for path, blocks in PAGES.items():
        page = path.read_text()
        new = rendered(page, blocks, path)
        if new == page:
            continue
        if args.check:
            print(f"{path} differs from the records: run python scripts/results_tables.py", file=sys.stderr)
            drift = 1
        else:
            path.write_text(new)
    return drift


if __name__ == "__main__":
    sys.exit(main())
