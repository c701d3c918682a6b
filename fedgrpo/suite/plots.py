"""The suite's PNG plots (matplotlib, no display needed). Each plot is made only when the runs hold
what it needs. "Accuracy against step" is a learning curve where the runs evaluated every
``eval.every_steps`` steps (``curve.jsonl``), else its two ends (before, after); each run group's
seeds are pooled at each step, with the 95% Wilson interval. The training reward per step comes from
``metrics.jsonl``. A method (its label) has one colour and one marker in every plot; runs of one method
are told apart by their marker, and points at the same step or bytes are spread a little sideways."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

from fedgrpo.run.intervals import wilson_interval
from fedgrpo.suite.record import RunRecord, pooled_curve, stale_mark

# one colour per method across every plot (matplotlib's tab10, fixed by name, not by order of appearance)
COLOURS = {
    "fedgrpo/confidence-graph": "#1f77b4",
    "fedgrpo/confidence-graph/no-gt": "#17becf",
    "fedgrpo/random": "#ff7f0e",
    "fedgrpo/all": "#d62728",
    "central-grpo": "#2ca02c",
    "fedpetuning/sft": "#9467bd",
    "fedpetuning/grpo": "#e377c2",
    "local-only": "#bcbd22",
    "dpsda-fl": "#8c564b",
    "zero-shot": "#7f7f7f",
}
OTHER_COLOURS = ("#393b79", "#637939", "#843c39", "#7b4173")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def colour(label: str) -> str:
    """The method's colour; a label without one gets a fixed one from its name."""
    if label in COLOURS:
        return COLOURS[label]
    return OTHER_COLOURS[int(hashlib.sha1(label.encode()).hexdigest(), 16) % len(OTHER_COLOURS)]


def marker(label: str) -> str:
    names = list(COLOURS)
    i = names.index(label) if label in names else int(hashlib.sha1(label.encode()).hexdigest(), 16)
    return MARKERS[i % len(MARKERS)]


def _styles(runs: list[RunRecord]) -> dict[str, tuple[str, str]]:
    """Per run its (colour, marker): the method's colour; the method's marker, or where a plot holds
    several runs of one method, one marker each."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for r in runs:
        by_label[r.label].append(r.name)
    return {
        name: (colour(label), marker(label) if len(names) == 1 else MARKERS[i % len(MARKERS)])
        for label, names in by_label.items()
        for i, name in enumerate(names)
    }


def _figure(title: str, xlabel: str, ylabel: str):  # noqa: ANN202 (matplotlib's types)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _save(fig, path: Path) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def make_plots(records: list[RunRecord], folder: Path) -> list[str]:
    """Write the plots that the records support into ``folder``; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    done = [r for r in records if r.results and r.overall() is not None]
    made: list[str] = []
    if done:
        made.append(_accuracy_vs_step(done, folder / "accuracy_vs_step.png"))
        made.append(_accuracy_vs_bytes(done, folder / "accuracy_vs_bytes.png"))
    if len({r.num_clients for r in done}) > 1:
        made.append(_accuracy_vs_k(done, folder / "accuracy_vs_k.png"))
    trained = [r for r in records if any(m.get("fed/reward_mean") is not None for m in r.metrics)]
    if trained:
        made.append(_reward_vs_step(trained, folder / "reward_vs_step.png"))
    audited: dict[str, list[float]] = defaultdict(list)  # selector -> every audited step's share
    key = "fed/reward_correctness"
    for r in records:
        audited[r.label] += [m[key] for m in r.metrics if m.get(key) is not None]
    audited = {k: v for k, v in audited.items() if v}
    if audited:
        made.append(_reward_correctness(audited, folder / "reward_correctness.png"))
    return made


def _accuracy_vs_step(done: list[RunRecord], path: Path) -> str:
    """One line per run group (its seeds pooled at each step) in its method's colour, with 95% Wilson
    intervals; groups are shifted a little sideways so that equal points stay apart."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in done:
        groups[r.group].append(r)
    curves = any(r.curve for r in done)
    what = "every eval.every_steps steps" if curves else "before and after training only"
    title = f"answer accuracy against step ({what}; seeds pooled)"
    fig, ax = _figure(title, step_xlabel(done), "answer accuracy")
    styles = _styles([runs[0] for runs in groups.values()])
    top = max((r.results.get("steps") or 0 for r in done), default=0)
    names = sorted(groups)
    for i, name in enumerate(names):
        runs = groups[name]
        points = pooled_curve(runs)
        shift = 0.012 * max(top, 1) * (i - (len(names) - 1) / 2)
        intervals = [wilson_interval(c, n) for _, c, n in points]
        ys = [c / n for _, c, n in points]
        c, m = styles[runs[0].name]
        ax.errorbar(
            [s + shift for s, _, _ in points],
            ys,
            yerr=[
                [y - lo for y, (lo, _) in zip(ys, intervals, strict=True)],
                [hi - y for y, (_, hi) in zip(ys, intervals, strict=True)],
            ],
            marker=m,
            color=c,
            alpha=0.8,
            capsize=2,
            markersize=4,
            label=stale_mark(f"{name} ({len(runs)} seeds)" if len(runs) > 1 else name, runs[0].stale),
        )
    ax.legend(fontsize=6)
    return _save(fig, path)


def step_xlabel(done: list[RunRecord]) -> str:
    """The step axis's label; it names the runs whose step is a FedAvg round of every client's local
    steps (results' ``client_steps``), since their steps are not the others'."""
    rounds = sorted({r.label for r in done if r.results.get("client_steps")})
    return "training step" + (f" ({', '.join(rounds)}: FedAvg round)" if rounds else "")


def _accuracy_vs_bytes(done: list[RunRecord], path: Path) -> str:
    fig, ax = _figure("answer accuracy against bytes communicated", "bytes down + up", "answer accuracy")
    labels = sorted({r.label for r in done})
    for i, label in enumerate(labels):
        runs = [r for r in done if r.label == label]
        accs = [r.overall() for r in runs]
        spread = 10 ** (0.04 * (i - (len(labels) - 1) / 2))  # methods at the same bytes stay apart
        ax.errorbar(
            [r.bytes_total() * spread for r in runs],
            [a[0] for a in accs],
            yerr=[[a[0] - a[1] for a in accs], [a[2] - a[0] for a in accs]],
            fmt=marker(label),
            color=colour(label),
            alpha=0.8,
            capsize=3,
            label=label,
        )
    # symlog so that zero-shot (0 bytes) sits beside runs of kilobytes and gigabytes; ticks only at 0
    # and the decades past the linear range, since matplotlib's own put 0 and 10^2 on top of each other
    ax.set_xscale("symlog", linthresh=1e3)
    top = max((r.bytes_total() for r in done), default=0)
    ax.set_xticks([0] + [10.0**k for k in range(3, max(3, math.ceil(math.log10(max(top, 1)))) + 1)])
    ax.legend(fontsize=7)
    return _save(fig, path)


def _accuracy_vs_k(done: list[RunRecord], path: Path) -> str:
    """One line per method, M and data partition (a K sweep holds M fixed; runs at other M are their
    own points; a coverage sweep, clients by domain, is its own line), the mean over seeds at each K,
    every run's own accuracy as a faint dot."""
    fig, ax = _figure("answer accuracy against K (mean over seeds)", "clients K", "answer accuracy")
    lines = k_lines(done)
    for (label, m, partition), by_k in lines.items():
        ks = sorted(by_k)
        name = label + ("" if m is None else f", M={m}") + (", by-domain" if partition == "by-domain" else "")
        style = {"color": colour(label), "marker": marker(label) if m is None else MARKERS[m % len(MARKERS)]}
        dashed = {"linestyle": "--"} if partition == "by-domain" else {}
        ax.plot(ks, [mean(by_k[k]) for k in ks], label=name, **style, **dashed)
        for k in ks:
            ax.scatter([k] * len(by_k[k]), by_k[k], alpha=0.3, s=12, **style)
    ax.set_xscale("log")
    ticks = sorted({k for by_k in lines.values() for k in by_k})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return _save(fig, path)


KLine = tuple[str, int | None, str]  # method label, M (None: not a FedGRPO run), data partition


def k_lines(done: list[RunRecord]) -> dict[KLine, dict[int, list[float]]]:
    """The K plot's lines, sorted: each run's answer accuracy by its K, one line per method label, M
    and partition (so a coverage sweep, clients by domain, never joins the random-partition line)."""
    lines: dict[KLine, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        if r.num_clients is not None:
            partition = r.config.get("data", {}).get("partition", "")
            lines[(r.label, r.experts_per_question, partition)][r.num_clients].append(r.overall()[0])
    return dict(sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])))


def _reward_vs_step(trained: list[RunRecord], path: Path) -> str:
    fig, ax = _figure("mean training reward per logged step", "training step", "reward (mean)")
    styles = _styles(trained)
    for r in trained:
        rows = [m for m in r.metrics if m.get("fed/reward_mean") is not None]
        c, mk = styles[r.name]
        steps, rewards = [m["step"] for m in rows], [m["fed/reward_mean"] for m in rows]
        ax.plot(
            steps,
            rewards,
            color=c,
            marker=mk,
            markevery=max(1, len(rows) // 8),
            alpha=0.8,
            label=stale_mark(r.name, r.stale),
        )
    ax.legend(fontsize=6)
    return _save(fig, path)


def _reward_correctness(audited: dict[str, list[float]], path: Path) -> str:
    fig, ax = _figure(
        "reward correctness per selector (simulation audit)", "selector", "rewards agreeing with truth"
    )
    labels = sorted(audited)
    heights = [mean(audited[k]) for k in labels]
    ax.bar([k.removeprefix("fedgrpo/") for k in labels], heights, color=[colour(k) for k in labels])
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelsize=7, labelrotation=15)
    return _save(fig, path)
