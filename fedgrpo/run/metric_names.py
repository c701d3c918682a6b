"""Every ``fed/*`` metric a run logs, with what it means: the one table that ``metrics.jsonl``'s
readers, the trackers (``grpo.report_to``) and ``docs/metrics.md`` share.

A metric's producer is the reward round (:class:`fedgrpo.server.stats.RoundStats`), the selector
(each client's competence) or, in simulations only, the label audit
(:class:`fedgrpo.simulation.audit.RoutingAudit`). Only ``scalar`` metrics reach the trackers; the
per-client and per-reason mappings are in ``metrics.jsonl`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["round", "selector", "audit"]


@dataclass(frozen=True)
class Metric:
    description: str
    source: Source = "round"
    scalar: bool = True  # False: a mapping (per client, per reason, per method)


FED_METRICS: dict[str, Metric] = {
    "fed/rounds": Metric("reward rounds in the step (one per batch of questions)"),
    "fed/questions": Metric("training questions sent to the experts (canaries not counted)"),
    "fed/reward_mean": Metric(
        "mean of the received rewards (correctness in [0, 1] plus the server's format reward); "
        "null when no reward came back"
    ),
    "fed/advantage_std": Metric(
        "standard deviation of the federated advantages over all candidates (canaries' not counted)"
    ),
    "fed/groups_scored": Metric("questions whose candidates at least one expert scored"),
    "fed/zero_spread_share": Metric(
        "share of scored groups whose rewards do not vary over the G candidates: no GRPO signal"
    ),
    "fed/unscored_share": Metric("share of questions no expert could score"),
    "fed/rewards_received": Metric("rewards received (expert-candidate slots with a value)"),
    "fed/rewards_missing": Metric(
        "expert-candidate slots without a reward: abstentions and rejected replies together"
    ),
    "fed/abstentions": Metric(
        "items a client could not judge (it does not hold the question and has no model)"
    ),
    "fed/methods": Metric(
        "items by how the clients scored them (answer / model / none), from each reply's counts; hidden: "
        "a private client's items (it does not tell how it scored them)",
        scalar=False,
    ),
    "fed/bytes_down": Metric("bytes sent to the clients (encoded requests)"),
    "fed/bytes_up": Metric("bytes received from the clients (encoded replies)"),
    "fed/bytes_down_per_round": Metric("fed/bytes_down divided by fed/rounds"),
    "fed/bytes_up_per_round": Metric("fed/bytes_up divided by fed/rounds"),
    "fed/bytes_down_per_client": Metric("bytes sent to each client", scalar=False),
    "fed/bytes_up_per_client": Metric("bytes received from each client", scalar=False),
    "fed/rejected": Metric(
        "replies rejected, by reason (malformed, out of range, not asked, timeout, ...)", scalar=False
    ),
    "fed/rejected_total": Metric("replies rejected, all reasons"),
    "fed/seconds": Metric("seconds the reward exchange took: routing, every client's scoring, the checks"),
    "fed/routed": Metric("questions routed to each client", scalar=False),
    "fed/replacements": Metric("experts replaced in the same round after returning no reward"),
    "fed/online_updates": Metric(
        "confidence-graph online updates: one per expert and question it took feedback on"
    ),
    "fed/timed_out": Metric("requests each client did not answer in time", scalar=False),
    "fed/canaries": Metric(
        "canary questions (hidden spot checks, federation.canaries) among the step's questions; not in "
        "fed/questions, their advantages are zero"
    ),
    "fed/canaries_asked": Metric(
        "canaries each client was asked (routed like any question, plus federation.canaries.fanout)",
        scalar=False,
    ),
    "fed/canary_rewards": Metric("canary rewards checked against the server's own answers"),
    "fed/excluded": Metric(
        "clients excluded in the step: canary honesty confidently below its limit (federation.canaries)",
        scalar=False,
    ),
    "fed/competence": Metric(
        "with the confidence graph: each client's mean edge weight after the step's online updates",
        source="selector",
        scalar=False,
    ),
    "fed/reward_correctness": Metric(
        "simulations only: share of expert rewards whose correctness (>= 0.5) matches the truth",
        source="audit",
    ),
    "fed/routed_domain_share": Metric(
        "simulations only: share of routed experts that hold data of the question's domain", source="audit"
    ),
}

# What every ``metrics.jsonl`` row holds besides the ``fed/*`` metrics.
ROW_KEYS: dict[str, str] = {
    "step": "the optimiser step",
    "seconds": "wall seconds since the previous row",
    "peak_rss_mb": "peak resident memory of the process so far, MB",
    "trl/*": "TRL's own logs (loss, KL, clip ratios, completion lengths, ...); TRL's `reward` and "
    "`reward_std` are renamed `trl/advantage_mean` and `trl/advantage_std`: what TRL sees is the "
    "federated advantage",
}


def tracked(key: str, value: object) -> bool:
    """Whether a row's entry goes to the trackers: a known scalar ``fed/*`` metric with a number."""
    metric = FED_METRICS.get(key)
    return (
        metric is not None
        and metric.scalar
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


_INTRO = """# Metrics reference

Generated from `fedgrpo/run/metric_names.py` by `fedgrpo docs` (do not edit by hand;
`tests/test_docs_reference.py` fails when it drifts).

A run writes one JSON line per logged step to `RUN/metrics.jsonl` (`grpo.logging_steps`, default 1).
Numbers that are not finite are written as `null`. A resumed run drops the lines after its
checkpoint and logs those steps again.

## Trackers

`grpo.report_to` is TRL's own setting (default `none`). With `grpo.report_to=tensorboard` or
`grpo.report_to=trackio` (the `trackers` extra installs both), every metric marked "to trackers"
below is logged beside TRL's, as `train/fed/...`:

```bash
fedgrpo run default grpo.report_to=tensorboard       # events in runs/default/tensorboard/
tensorboard --logdir runs/default/tensorboard
fedgrpo run default grpo.report_to=trackio grpo.project=fedgrpo grpo.run_name=default
trackio show --project fedgrpo                        # trackio keeps its own store (TRACKIO_DIR)
```

TensorBoard's events go to the run folder's `tensorboard/` (TRL's default would be
`checkpoints/runs/<date>_<host>/`). trackio writes to its local store (`TRACKIO_DIR`, by default
under `~/.cache/huggingface/trackio`), keyed by `grpo.project` and `grpo.run_name`. The mappings
(per client, per reason) are in `metrics.jsonl` only.

## Every row

"""


def metrics_reference() -> str:
    """The whole ``docs/metrics.md``, generated from :data:`FED_METRICS` and :data:`ROW_KEYS`."""
    rows = ["| key | what it means |", "|---|---|"]
    rows += [f"| `{key}` | {text} |" for key, text in ROW_KEYS.items()]
    table = ["| key | what it means | from | to trackers |", "|---|---|---|---|"]
    sources = {"round": "reward round", "selector": "selector", "audit": "simulation audit"}
    for key, m in FED_METRICS.items():
        table.append(f"| `{key}` | {m.description} | {sources[m.source]} | {'yes' if m.scalar else 'no'} |")
    return _INTRO + "\n".join([*rows, "", "## `fed/*`", "", *table]) + "\n"
