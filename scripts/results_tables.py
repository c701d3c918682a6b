"""The tables of docs/results.md, made from the committed run records under docs/results/ alone.

Each table sits in docs/results.md between ``<!-- table: NAME -->`` and ``<!-- end: NAME -->``;
this script rewrites them, or with ``--check`` exits 1 when the page differs from the records
(``tests/test_docs_links.py`` runs the check).

    python scripts/results_tables.py            # rewrite the tables in docs/results.md
    python scripts/results_tables.py --check    # fail if they drift from the records
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from statistics import mean

from fedgrpo.run.intervals import difference_interval, wilson_interval
from fedgrpo.suite import markdown
from fedgrpo.suite.record import RunRecord, pooled_counts
from fedgrpo.suite.report import collect

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"


def _acc(r: RunRecord) -> str:
    acc, low, high = r.overall()  # type: ignore[misc]
    return f"{acc:.3f} [{low:.2f}, {high:.2f}]"


def _minus(r: RunRecord, ref: RunRecord) -> str:
    d, low, high = difference_interval(*r.answer_counts(), *ref.answer_counts())  # type: ignore[misc]
    return f"{d:+.3f} [{low:+.2f}, {high:+.2f}]"


def _correctness(r: RunRecord) -> str:
    values = [m["fed/reward_correctness"] for m in r.metrics if m.get("fed/reward_correctness") is not None]
    return f"{mean(values):.3f}" if values else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown.table(header, rows))


def sweeps() -> str:
    """K and M, every seed's held-out answers pooled, with where the rewards came from and the bytes."""
    groups: dict[tuple[int, int], list[RunRecord]] = {}
    for r in collect(ROOT / "docs" / "results" / "sweeps"):
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


TABLES = {
    "sweeps": sweeps,
    "poisoning": poisoning,
    "privacy": privacy,
    "per-example-privacy": per_example_privacy,
}


def rendered(page: str) -> str:
    """``page`` with every table block rewritten from the records."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table: {name} -->\n).*?(\n<!-- end: {name} -->)", re.S)
        if not pattern.search(page):
            raise SystemExit(f"{PAGE}: no block for table {name!r}")
        page = pattern.sub(lambda m, text=make(): m.group(1) + text + m.group(2), page)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/results.md differs")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = rendered(page)
    if args.check:
        if new != page:
            print(f"{PAGE} differs from the records: run python scripts/results_tables.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
