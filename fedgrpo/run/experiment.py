"""A whole FedGRPO run: evaluate, train with federated advantages, evaluate again, write the run folder.

:func:`run` takes a transport that is already connected (it never starts one): a simulation's
in-process transport (:mod:`fedgrpo.simulation.in_process`), or a Flower ServerApp's
``FlowerTransport``. The run folder (``config.yaml``, ``metrics.jsonl``, complete-or-ignored
checkpoints, ``results.json``, ``run.log``) is the same either way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgrpo.client.privacy_state import STATE_FOLDER, privacy_totals
from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import Example
from fedgrpo.models.loading import load_policy, load_tokenizer, run_device
from fedgrpo.run.assemble import ServerData, build_advantage, build_selector
from fedgrpo.run.curve import CURVE_FILE, read_curve, step_seconds
from fedgrpo.run.evaluate import DomainAccuracy, accuracy_table, evaluate_questions, from_json, to_json
from fedgrpo.run.metrics import (
    Audit,
    MetricsCallback,
    install_metrics,
    peak_rss_mb,
    read_metrics,
    truncate_metrics,
)
from fedgrpo.run.outcomes import save_outcomes
from fedgrpo.run.trl import HeldOutCurve, StopOnInterrupt, TrainingReward, make_trainer, train_dataset
from fedgrpo.server import FederatedAdvantage
from fedgrpo.server.stats import RoundStats, note_privacy_spent
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.checkpoints import STATE_FILE, last_checkpoint
from fedgrpo.storage.run_folder import in_run_folder, resume_point, start_run
from fedgrpo.transport import Transport

log = logging.getLogger(__name__)


def run(
    cfg: FedGRPOConfig,
    transport: Transport,
    data: ServerData,
    *,
    resume: bool = False,
    audit: Audit | None = None,
    client_domains: dict[str, dict[str, int]] | None = None,
    split_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a whole experiment into ``cfg.output_dir``; returns the results that are also saved there.

    ``audit``, ``client_domains`` and ``split_info`` exist only in a simulation, where the experimenter
    holds every party's data; a deployment passes none of them.
    """
    return in_run_folder(
        cfg, resume, lambda: _run(cfg, transport, data, resume, audit, client_domains, split_info)
    )


def _run(
    cfg: FedGRPOConfig,
    transport: Transport,
    data: ServerData,
    resume: bool,
    audit: Audit | None,
    client_domains: dict[str, dict[str, int]] | None,
    split_info: dict[str, Any] | None,
) -> dict[str, Any]:
    out = cfg.output_dir
    start_run(cfg, resume, split_info)
    tokenizer, model = load_server_model(cfg)
    selector, selection = build_selector(
        cfg, data.auxiliary, transport, tokenizer, out, resume, client_domains
    )
    competence = None if selection is None else selection.get("accuracy_per_client")
    advantage = build_advantage(cfg, transport, selector, data.canaries, competence)
    before = evaluate_before(cfg, model, tokenizer, data.heldout, resume)
    results = train_and_evaluate(cfg, model, tokenizer, data, advantage, resume, audit, before)
    results.update(
        selection=selection,
        split=split_info,
        transport=transport.summary(),
        privacy=privacy_report(selection, advantage, out / STATE_FOLDER),
        trust=None if advantage.canaries is None else advantage.canaries.reputation.report(),
    )
    write_results(cfg, results)
    transport.close()
    log.info("%s", communication_line(advantage.total, "replies"))
    return results


def load_server_model(cfg: FedGRPOConfig) -> tuple[Any, Any]:
    log.info("loading policy %s", cfg.model.name_or_path)
    return load_tokenizer(cfg.model.name_or_path), load_policy(cfg.model.name_or_path, cfg.model.dtype)


def evaluate_heldout(
    cfg: FedGRPOConfig, policy: Any, tokenizer: Any, heldout: dict[str, list[Example]], tag: str
) -> dict[str, DomainAccuracy]:
    """The held-out accuracy per domain, as every method reports it; each question's outcome goes to
    the run folder's ``outcomes.json`` under ``tag`` (``before`` or ``after``). The policy moves to
    the run's device first: a zero-shot run or the evaluation before training would otherwise
    generate on the CPU beside an idle GPU (TRL moves it only when training starts)."""
    ev = cfg.eval
    device = run_device(cfg.run.device)
    if policy.device.type != device.type:
        log.info("evaluating on %s", device)
        policy.to(device)
    start = time.perf_counter()
    res, outcomes = evaluate_questions(
        policy,
        tokenizer,
        heldout,
        ev.max_new_tokens,
        ev.batch_size,
        cfg.model.worked_example,
        ev.max_per_domain,
        share_prompts=cfg.run.share_prompts,
    )
    log.info("evaluation %s took %.0f s", tag, time.perf_counter() - start)
    save_outcomes(cfg.output_dir, tag, outcomes)
    return res


Evaluate = Callable[[Any, str], dict[str, DomainAccuracy]]


def held_out_evaluator(cfg: FedGRPOConfig, tokenizer: Any, heldout: dict[str, list[Example]]) -> Evaluate:
    """``evaluate(policy, tag)``: :func:`evaluate_heldout` with the run's tokenizer and held-out set."""
    return lambda policy, tag: evaluate_heldout(cfg, policy, tokenizer, heldout, tag)


def evaluate_before(
    cfg: FedGRPOConfig, model: Any, tokenizer: Any, heldout: dict[str, list[Example]], resume: bool
) -> dict[str, DomainAccuracy] | None:
    """The untrained policy's accuracy (None when eval.before is off), kept in ``eval_before.json``."""
    if not cfg.eval.before:
        return None
    before_path = cfg.output_dir / "eval_before.json"
    if resume and before_path.exists():
        return from_json(json.loads(before_path.read_text()))
    before = evaluate_heldout(cfg, model, tokenizer, heldout, "before")
    write_json_atomic(before_path, to_json(before))
    log.info("before training:\n%s", accuracy_table(before, None))
    return before


def train_and_evaluate(
    cfg: FedGRPOConfig,
    model: Any,
    tokenizer: Any,
    data: ServerData,
    reward: TrainingReward,
    resume: bool,
    audit: Audit | None,
    before: dict[str, DomainAccuracy] | None,
) -> dict[str, Any]:
    """TRL's GRPO on ``data.train_questions`` with ``reward``, checkpoints, ``metrics.jsonl``, Ctrl-C as
    "save, then stop", then the held-out evaluation: the results every training method shares."""
    out = cfg.output_dir
    checkpoints = out / "checkpoints"
    dataset = train_dataset(data.train_questions, cfg.model.worked_example)
    trainer = make_trainer(cfg, model, tokenizer, dataset, reward, checkpoints)
    metrics_path = out / "metrics.jsonl"
    install_metrics(trainer, MetricsCallback(metrics_path, reward, audit))
    stop = StopOnInterrupt()
    trainer.add_callback(stop)
    curve = None
    if cfg.eval.every_steps:
        evaluate = held_out_evaluator(cfg, tokenizer, data.heldout)
        curve = HeldOutCurve(evaluate, cfg.eval.every_steps, out / CURVE_FILE)
        trainer.add_callback(curve)
    resume_from = prepare_resume(checkpoints, metrics_path, reward) if resume else None
    if not resume:
        truncate_metrics(metrics_path, 0)
        (out / CURVE_FILE).unlink(missing_ok=True)

    start = time.perf_counter()
    stop.install()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        stop.interrupted = "SIGINT"
    finally:
        stop.uninstall()
    if stop.interrupted:
        log.error(
            "interrupted (%s); last complete checkpoint: %s. Continue with --resume.",
            stop.interrupted,
            last_checkpoint(checkpoints) or "none",
        )
        raise KeyboardInterrupt
    curve_seconds = curve.seconds if curve else 0.0
    train_seconds = time.perf_counter() - start - curve_seconds  # the curve's evaluations left out
    trainer.save_model(str(out / "final"))

    after = evaluate_heldout(cfg, trainer.model, tokenizer, data.heldout, "after") if cfg.eval.after else None
    seconds = step_seconds(read_metrics(metrics_path), read_curve(out / CURVE_FILE))  # less the curve's
    per_step = seconds[1:] or seconds
    return {
        "name": cfg.name,
        "method": cfg.method,
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(sum(per_step) / max(len(per_step), 1), 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "before": to_json(before),
        "after": to_json(after),
        "communication": reward.total.summary(),
        "curve_eval_seconds": round(curve_seconds, 1),
    }


def write_results(cfg: FedGRPOConfig, results: dict[str, Any]) -> None:
    """``results.json`` (its presence marks the run done) and the readable table in the log."""
    path = cfg.output_dir / "results.json"
    write_json_atomic(path, results)
    table = accuracy_table(from_json(results["before"]), from_json(results["after"]))
    log.info("\n%s\nresults: %s", table, path)


def log_outcome(
    before: dict[str, DomainAccuracy] | None,
    after: dict[str, DomainAccuracy] | None,
    comm: RoundStats,
    rejected_what: str,
    results_path: Path,
) -> None:
    """The end of a run in the log: the accuracy table, the bytes both ways, where the results are."""
    table, line = accuracy_table(before, after), communication_line(comm, rejected_what)
    log.info("\n%s\n%s\nresults: %s", table, line, results_path)


def communication_line(comm: RoundStats, rejected_what: str) -> str:
    """A run's communication in one line: rounds, bytes both ways, what the server rejected."""
    rounds = max(comm.rounds, 1)
    return (
        f"communication: {comm.rounds} rounds, {comm.bytes_down / 1e3:.1f} KB down, "
        f"{comm.bytes_up / 1e3:.1f} KB up ({(comm.bytes_down + comm.bytes_up) / 1e3 / rounds:.1f} KB per "
        f"round); {sum(comm.rejected.values())} {rejected_what} rejected"
    )


def privacy_report(
    selection: dict[str, Any] | None, advantage: FederatedAdvantage, states: Path | None = None
) -> dict[str, Any]:
    """Per client the per-release (epsilon, delta) it reported for the run (its latest, largest report:
    the competence query's or the last reward reply's); clients without differential privacy are absent.

    A simulation's clients keep their ledgers in ``states`` (the run folder's): their per-example
    totals are added from there. A deployed organisation's never reach the server (they would tell
    it which questions the organisation holds): it reads them with ``fedgrpo privacy show``.
    """
    spent = {c: tuple(s) for c, s in ((selection or {}).get("privacy_spent") or {}).items()}
    for client, pair in advantage.privacy_spent.items():
        note_privacy_spent(spent, client, pair)
    report: dict[str, Any] = {}
    for client, (e, d) in sorted(spent.items()):
        report[client] = {"epsilon": round(e, 6), "delta": d}
        state = None if states is None else states / f"{client}.json"
        if state is not None and state.is_file():
            report[client].update(privacy_totals(state))
    return report


def prepare_resume(checkpoints: Path, metrics_path: Path, reward: TrainingReward) -> Path | None:
    """Drop torn checkpoints, restore the federation's state and the metrics up to the last complete one."""
    point = resume_point(checkpoints, metrics_path)
    if point is None:
        return None
    step, folder = point
    reward.load_state_dict(json.loads((folder / STATE_FILE).read_text()))
    log.info("resuming from %s (step %d)", folder, step)
    return folder
