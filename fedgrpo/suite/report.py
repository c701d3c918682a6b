"""The suite's report: Markdown and HTML tables and matplotlib PNG plots, from the run folders alone.

Read-only over what the runs wrote (``suite.json``, each run's ``results.json``, ``config.yaml``,
``metrics.jsonl``, ``outcomes.json`` and ``curve.jsonl``, and the suite folder's ``stale.yaml`` if
any), so it can be remade at any time, from a finished or a half-finished suite. A gain counts in
*answer* accuracy (the final answer wherever written), so the plots use it; the tables give strict
accuracy (the tagged answer) too, each with its 95% Wilson interval.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import yaml

from fedgrpo.run.curve import CURVE_FILE, read_curve
from fedgrpo.run.intervals import wilson_interval
from fedgrpo.run.metrics import read_metrics
from fedgrpo.run.outcomes import load_outcomes
from fedgrpo.suite.comparison import comparison
from fedgrpo.suite.markdown import table as _table
from fedgrpo.suite.plots import make_plots
from fedgrpo.suite.provenance import listed_stale, stale_reason
from fedgrpo.suite.record import RunRecord, pooled_counts, stale_mark
from fedgrpo.suite.runner import read_status

log = logging.getLogger(__name__)


def collect(folder: Path) -> list[RunRecord]:
    records = []
    listed = listed_stale(folder)
    for name, entry in read_status(folder).items():
        run_dir = folder / "runs" / name
        rec = RunRecord(name, entry.get("method", "?"), entry.get("status", "?"), entry.get("error"))
        rec.wall_seconds = entry.get("wall_seconds")
        if (run_dir / "results.json").exists():
            rec.results = json.loads((run_dir / "results.json").read_text())
        if (run_dir / "config.yaml").exists():
            rec.config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        rec.metrics = read_metrics(run_dir / "metrics.jsonl")
        rec.curve = read_curve(run_dir / CURVE_FILE)
        rec.outcomes = load_outcomes(run_dir, "after")
        rec.stale = stale_reason(name, rec.method, entry.get("code"), listed)
        records.append(rec)
    return records


def _cell(acc: float | None, low: float | None, high: float | None) -> str:
    return "-" if acc is None else f"{acc:.3f} [{low:.2f}, {high:.2f}]"


def _name(r: RunRecord) -> str:
    return stale_mark(r.name, r.stale)


def markdown_report(title: str, records: list[RunRecord], plots: list[str]) -> str:
    done = [r for r in records if r.results]
    domains = sorted({d for r in done for d in (r.results.get("after") or {})})
    out = [f"# {title}", ""]
    failed = [r for r in records if r.status == "failed"]
    out += [f"{len(done)} of {len(records)} runs have results; {len(failed)} failed.", ""]
    out += ["## Answer accuracy after training (95% Wilson interval)", ""]
    rows = []
    for r in done:
        after = r.results.get("after") or {}
        cells = [
            _cell(
                after[d].get("answer_accuracy"), after[d].get("answer_ci_low"), after[d].get("answer_ci_high")
            )
            if d in after
            else "-"
            for d in domains
        ]
        total = r.overall()
        rows.append([_name(r), r.label, *cells, _cell(*total) if total else "-"])
    out += _table(["run", "method", *domains, "all domains"], rows) + [""]
    out += ["## Strict accuracy (answer in tags) before -> after", ""]
    rows = []
    for r in done:
        before, after = r.results.get("before") or {}, r.results.get("after") or {}
        rows.append(
            [_name(r)]
            + [
                " -> ".join(
                    _cell(x[d]["accuracy"], x[d]["ci_low"], x[d]["ci_high"]) if d in x else "-"
                    for x in (before, after)
                )
                for d in domains
            ]
        )
    out += _table(["run", *domains], rows) + [""]
    out += by_clients_and_experts(done)
    out += comparison(done)
    stale = [r for r in records if r.stale]
    if stale:
        why = "Runs whose method's code changed since they ran, or listed in stale.yaml with a reason: shown"
        out += ["## Stale rows", "", why + ", never counted as a win or a loss.", ""]
        out += _table(["run", "method", "why"], [[r.name, r.label, r.stale or ""] for r in stale]) + [""]
    rebuilt: dict[str, list[str]] = {}  # how -> runs
    for r in done:
        if r.results.get("reconstructed"):
            rebuilt.setdefault(str(r.results["reconstructed"]), []).append(r.name)
    if rebuilt:
        out += ["## Rebuilt records", "", "Records rebuilt from an earlier report (no run folder kept):", ""]
        out += _table(["runs", "how"], [[", ".join(names), how] for how, names in rebuilt.items()]) + [""]
    note = "Bytes are those of the reward exchanges (central-grpo: the pooled data, uploaded once)."
    out += ["## Cost", "", note, ""]
    rows = []
    for r in done:
        comm = r.results.get("communication") or {}
        rows.append(
            [
                r.name,
                r.label,
                str(r.results.get("steps")),
                f"{comm.get('fed/bytes_down', 0):,}",
                f"{comm.get('fed/bytes_up', 0):,}",
                f"{r.results.get('train_seconds', 0):.0f}",
                "-" if r.wall_seconds is None else f"{r.wall_seconds:.0f}",
            ]
        )
    out += _table(["run", "method", "steps", "bytes down", "bytes up", "train s", "wall s"], rows) + [""]
    if failed:
        out += ["## Failed runs", ""]
        out += _table(["run", "method", "error"], [[r.name, r.method, r.error or "?"] for r in failed]) + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    return "\n".join(out)


def by_clients_and_experts(done: list[RunRecord]) -> list[str]:
    """For a suite that varies K or M: each method at each (K, M), its seeds pooled (every held-out
    answer of every seed counted once, with its Wilson interval) and the per-seed accuracies."""
    fedgrpo = [r for r in done if r.answer_counts() and r.num_clients is not None]
    if len({(r.num_clients, r.experts_per_question) for r in fedgrpo if r.method == "fedgrpo"}) < 2:
        return []
    groups: dict[tuple[str, int, int | None], list[RunRecord]] = {}
    for r in fedgrpo:
        groups.setdefault((r.label, r.num_clients, r.experts_per_question), []).append(r)  # type: ignore[arg-type]
    rows = []
    for (label, k, m), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        correct, n = pooled_counts(runs)
        seeds = ", ".join(f"{r.overall()[0]:.3f}" for r in sorted(runs, key=lambda r: r.seed or 0))  # type: ignore[index]
        rows.append(
            [
                label,
                str(k),
                "-" if m is None else str(m),
                str(len(runs)),
                _cell(correct / n, *wilson_interval(correct, n)),
                seeds,
            ]
        )
    lines = ["## By clients K and experts per question M", ""]
    lines += [
        "Answer accuracy over all domains, each (K, M) with its seeds pooled: every held-out answer of "
        "every seed counted once, with its 95% Wilson interval; then each seed's own, in seed order.",
        "",
    ]
    header = ["method", "K", "M", "seeds", "answer accuracy (pooled)", "per seed"]
    return lines + _table(header, rows) + [""]


def html_report(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}img{max-width:48%}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


def write_report(folder: Path, title: str | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``folder``; returns report.md.

    Where ``suite.json`` lists a done run whose folder is gone (a committed suite that kept only its
    report), the records cannot remake the tables: ``report.md`` and the plots are kept as they are
    and only the HTML is remade, from ``report.md``."""
    title = title or f"Suite {folder.name}"
    records = collect(folder)
    gone = [r.name for r in records if r.status == "done" and r.results is None]
    if gone and (folder / "report.md").exists():
        log.warning("no run folder for %s: report.md kept, report.html remade from it", ", ".join(gone))
        markdown = (folder / "report.md").read_text()
    else:
        plots = make_plots(records, folder / "plots")
        markdown = markdown_report(title, records, plots)
        (folder / "report.md").write_text(markdown)
    (folder / "report.html").write_text(html_report(markdown, title))
    return folder / "report.md"
