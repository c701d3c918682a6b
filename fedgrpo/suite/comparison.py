"""The report's comparison: the reference FedGRPO run against every other run, in answer accuracy over
all domains, paired question by question where both runs recorded their outcomes.

Runs are grouped by name without their seed; two groups are compared on the seeds they share, each
question of seed s of one paired with the same question (the same ``qid``) of seed s of the other, the
2x2 tables of every seed and domain added up (:mod:`fedgrpo.suite.paired`). Where a run of the pair
has no ``outcomes.json`` (a record from before it existed), the row falls back to the unpaired test on
the pooled counts and says so. Holm's correction runs over the report's comparisons that are not
stale; a stale row (:mod:`fedgrpo.suite.provenance`) is never a win or a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

from fedgrpo.run.intervals import difference_interval
from fedgrpo.suite.markdown import table as markdown_table
from fedgrpo.suite.paired import (
    PairedTable,
    holm,
    mcnemar_exact,
    paired_difference,
    paired_mdd,
    unpaired_mdd,
    unpaired_p,
)
from fedgrpo.suite.record import RunRecord, pooled_counts, stale_mark

ALPHA = 0.05
UNPAIRED = "unpaired: per-question outcomes not recorded"


@dataclass
class Row:
    group: str
    label: str
    seeds: int
    n: int  # paired questions (pooled over seeds), or the smaller arm's questions when unpaired
    accuracy: float
    difference: tuple[float, float, float]
    test: str
    p: float
    mdd: float | None
    bytes: float
    stale: str | None
    holm: float | None = None

    @property
    def verdict(self) -> str:
        if self.stale:
            return "stale (not counted)"
        if self.holm is None or self.holm >= ALPHA:
            return "tie"
        return "win" if self.difference[0] > 0 else "loss"


def reference_run(done: list[RunRecord]) -> RunRecord | None:
    """The FedGRPO run the others are compared with: the first with the confidence graph and ground
    truth (the paper's method), else the first FedGRPO run."""
    fedgrpo = [r for r in done if r.method == "fedgrpo" and r.answer_counts()]
    graph = [r for r in fedgrpo if r.label == "fedgrpo/confidence-graph"]
    return (graph or fedgrpo or [None])[0]


def _table(ref: RunRecord, other: RunRecord) -> PairedTable | None:
    """The two runs' answer outcomes paired by question id, or None when either did not record them."""
    if ref.outcomes is None or other.outcomes is None:
        return None
    table = PairedTable()
    for domain, mine in ref.outcomes.items():
        theirs = other.outcomes.get(domain)
        if theirs is None:
            continue
        by_qid = dict(zip(theirs.qids, theirs.answer, strict=True))
        shared = [(bit, by_qid[q]) for q, bit in zip(mine.qids, mine.answer, strict=True) if q in by_qid]
        table += PairedTable.of("".join(a for a, _ in shared), "".join(b for _, b in shared))
    return table


def compare(refs: list[RunRecord], others: list[RunRecord]) -> Row:
    """One group against the reference group, on their shared seeds (all runs when none is shared)."""
    by_seed = {r.seed: r for r in refs}
    pairs = [(by_seed[o.seed], o) for o in others if o.seed in by_seed]
    tables = [_table(a, b) for a, b in pairs]
    other = others[0]
    stale = next((r.stale for r in [*refs, *others] if r.stale), None)
    bytes_ = mean(r.bytes_total() for r in others)
    if pairs and None not in tables and (t := sum(tables, PairedTable())).n:  # type: ignore[arg-type]
        return Row(
            group=other.group,
            label=other.label,
            seeds=len(pairs),
            n=t.n,
            accuracy=(t.a + t.c) / t.n,
            difference=paired_difference(t),
            test=f"McNemar b={t.b}, c={t.c}",
            p=mcnemar_exact(t.b, t.c),
            mdd=paired_mdd((t.b + t.c) / t.n, t.n),
            bytes=bytes_,
            stale=stale,
        )
    mine, theirs = ([a for a, _ in pairs], [b for _, b in pairs]) if pairs else (refs, others)
    (c1, n1), (c2, n2) = pooled_counts(mine), pooled_counts(theirs)
    return Row(
        group=other.group,
        label=other.label,
        seeds=len(pairs) or len(others),
        n=min(n1, n2),
        accuracy=c2 / n2,
        difference=difference_interval(c1, n1, c2, n2),
        test=UNPAIRED,
        p=unpaired_p(c1, n1, c2, n2),
        mdd=unpaired_mdd((c1 + c2) / (n1 + n2), min(n1, n2)),
        bytes=bytes_,
        stale=stale,
    )


def comparison_rows(done: list[RunRecord]) -> tuple[RunRecord, list[RunRecord], list[Row]] | None:
    """The reference run, its group (its seeds) and one row per other group, Holm-corrected."""
    ref = reference_run(done)
    if ref is None:
        return None
    groups: dict[str, list[RunRecord]] = {}
    for r in done:
        if r.answer_counts():
            groups.setdefault(r.group, []).append(r)
    refs = groups.pop(ref.group)
    rows = with_holm([compare(refs, runs) for runs in groups.values()])
    return ref, refs, rows


def with_holm(rows: list[Row]) -> list[Row]:
    """The rows, each not stale given its Holm-adjusted p over the family of those not stale."""
    counted = [row for row in rows if not row.stale]
    for row, adjusted in zip(counted, holm([row.p for row in counted]), strict=True):
        row.holm = adjusted
    return rows


def format_p(p: float | None) -> str:
    """A p-value as the report and the pages that cite it print it ("-" where there is none)."""
    return "-" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_difference(d: float, low: float, high: float) -> str:
    """A signed difference with its 95% interval, e.g. ``+0.039 [-0.01, +0.08]``."""
    return f"{d:+.3f} [{low:+.2f}, {high:+.2f}]"


def comparison(done: list[RunRecord]) -> list[str]:
    """The comparison's Markdown section: the table and what its columns mean."""
    found = comparison_rows(done)
    if found is None or not found[2]:
        return []
    ref, refs, rows = found
    c1, n1 = pooled_counts(refs)
    ref_bytes = mean(r.bytes_total() for r in refs)
    body = []
    for row in rows:
        ratio = "-" if not ref_bytes or not row.bytes else f"{row.bytes / ref_bytes:,.1f}x"
        mdd = "-" if row.mdd is None else f"{row.mdd:.3f}"
        name = stale_mark(row.group, row.stale)
        cells = [name, row.label, str(row.seeds), str(row.n), f"{row.accuracy:.3f}"]
        cells += [format_difference(*row.difference), row.test, format_p(row.p), format_p(row.holm)]
        cells.append(row.verdict)
        body.append([*cells, mdd, f"{row.bytes:,.0f}", ratio])
    name = stale_mark(ref.group, ref.stale)
    lines = [f"## {name} against each run", ""]
    lines += [
        f"Answer accuracy over all domains: {name} {c1 / n1:.3f} ({c1}/{n1}, {len(refs)} seed(s) pooled). "
        f"The difference is {ref.group} minus the run. Paired rows (both runs recorded each question's "
        "outcome): the questions of each shared seed paired by question id and pooled over seeds; "
        "exact McNemar test on the discordant questions (b: only "
        f"{ref.group} right, c: only the run right), Newcombe's paired 95% interval (method 10). "
        f"Rows marked '{UNPAIRED}': the two-proportion z test and Newcombe's unpaired interval on the "
        "pooled counts (conservative). Holm's correction over the rows not stale; a win or a loss is a "
        f"Holm-adjusted p below {ALPHA}. MDD: the smallest difference the comparison detects with 80% "
        "power at two-sided alpha 0.05 (before Holm): paired, Connor's from the discordance rate and "
        "the pairs; unpaired, (z_a + z_b) sqrt(2 p (1 - p) / n). "
        f"Bytes: {ref_bytes:,.0f} for {ref.group}; the ratio is the run's bytes over that.",
        "",
    ]
    header = ["run", "method", "seeds", "questions", "answer accuracy", "difference", "test", "p"]
    header += ["Holm p", "FedGRPO", "MDD", "bytes", "bytes ratio"]
    return lines + markdown_table(header, body) + [""]
