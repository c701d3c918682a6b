"""The ``fedpetuning`` baseline: clients fine-tune LoRA adapters on their own data, the server averages them.

Each round the server sends its averaged adapter to a share of the clients; each continues it on its
private labelled examples for ``fedpetuning.local_steps`` optimiser steps (TRL SFT on prompt ->
``<answer>...</answer>``, or TRL GRPO rewarded by its own answer check: the same trainers the client
experts use, :func:`fedgrpo.client.experts.local_trainer`) and sends the adapter back; the server
averages them weighted by examples held (FedAvg, :mod:`fedgrpo.algorithms.fedpetuning.fedavg`). Only adapter
tensors move: the base weights never change. Unlike FedGRPO, the clients' data shape the shared
weights directly, and every round costs a whole adapter each way per client.

It runs on the same config, seeded split, held-out sets and evaluation as a FedGRPO run and writes
the same run folder: ``config.yaml``, ``metrics.jsonl`` (one row per round), complete-or-ignored
checkpoints (one per round, ``--resume`` continues from the last), ``final/`` (the adapter) and
``results.json`` with FedGRPO's keys.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import set_seed

from fedgrpo.algorithms.fedpetuning.fedavg import (
    AdapterState,
    to_wire,
    update_problem,
    weighted_average,
    wire_bytes,
)
from fedgrpo.client.experts import ExpertRecipe, local_trainer, training_summary
from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.data import Example, derive_seed
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.curve import CURVE_FILE, curve_point
from fedgrpo.run.evaluate import to_json
from fedgrpo.run.experiment import evaluate_before, held_out_evaluator, log_outcome
from fedgrpo.run.metrics import peak_rss_mb, read_metrics, truncate_metrics
from fedgrpo.run.trl import lora_config
from fedgrpo.server.stats import TRANSFER_KEYS, RoundStats, finite
from fedgrpo.simulation.data import build_data, split_summary
from fedgrpo.simulation.partition import FederatedSplit
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.checkpoints import COMPLETE_MARKER, STATE_FILE, complete_checkpoints
from fedgrpo.storage.run_folder import resume_point, run_folder, start_run

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
COMMUNICATION_KEYS = TRANSFER_KEYS


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """A whole in-process fedpetuning run into ``cfg.output_dir``; returns the results also saved
    there (:func:`fedgrpo.algorithms.run_method` picks this or the Flower run)."""
    if cfg.federation.transport == "flower-deployment":
        raise ConfigError(
            "fedpetuning runs on the seeded split of a simulation: federation.transport must be "
            "in_process or flower-simulation"
        )
    if cfg.federation.transport == "flower-simulation":  # run_method dispatches it to the Flower run
        raise ConfigError(
            "this runs fedpetuning in process; for Flower use fedgrpo run CONFIG method=fedpetuning"
        )
    split = build_data(cfg)  # before the folder exists: a data error leaves nothing behind
    clients = [name for name, examples in split.clients.items() if examples]
    if not clients:
        raise ConfigError("data: no client holds any example to train on")
    if len(clients) < len(split.clients):
        log.warning("clients without examples take no part: %s", sorted(set(split.clients) - set(clients)))
    with run_folder(cfg, resume):
        return _run(cfg, split, clients, resume)


def policy_with_adapter(cfg: FedGRPOConfig) -> Any:
    """The server's policy with one fresh LoRA adapter (``model.lora``'s shape), seeded by ``cfg.seed``."""
    from peft import get_peft_model

    base = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    set_seed(cfg.seed)  # the adapter's initial weights depend on the seed only (not on what ran before)
    return get_peft_model(base, lora_config(cfg.model.lora))


def adapter_state(model: Any) -> AdapterState:
    """The adapter's tensors only, keyed without the adapter name, as a float32 copy to send."""
    from peft import get_peft_model_state_dict

    return to_wire(get_peft_model_state_dict(model))


def load_adapter_state(model: Any, state: AdapterState) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter tensors the model does not have: {unexpected[:3]}")


def sample_clients(clients: list[str], share: float, seed: int, round_: int) -> list[str]:
    """``max(int(K * share), 1)`` clients for this round, as Flower's FedAvg sizes its sample; seeded
    per round (so a resumed run draws the same), listed in ``clients``' order (the averaging order)."""
    n = max(int(len(clients) * share), 1)
    chosen = set(random.Random(derive_seed(seed, "fedpetuning-sample", round_)).sample(clients, n))
    return [c for c in clients if c in chosen]


def local_recipe(cfg: FedGRPOConfig, client: str, round_: int) -> ExpertRecipe:
    """A client's local training for one round; its seed differs per round and client, so a client
    with more examples than ``local_steps`` batches sees different ones each round."""
    fp, lo = cfg.fedpetuning, cfg.model.lora
    return ExpertRecipe(
        base_model=cfg.model.name_or_path,
        method=fp.method,
        learning_rate=fp.learning_rate,
        batch_size=fp.batch_size,
        lora_r=lo.r,
        lora_alpha=lo.alpha,
        worked_example=cfg.model.worked_example,  # the prompt the server's policy is evaluated with
        seed=derive_seed(cfg.seed, "fedpetuning-local", round_, client) % 2**32,
        num_generations=fp.num_generations,
        max_completion_length=fp.max_completion_length,
    )


def train_locally(
    cfg: FedGRPOConfig,
    model: Any,
    tokenizer: Any,
    client: str,
    examples: list[Example],
    global_state: AdapterState,
    round_: int,
) -> tuple[AdapterState, dict[str, Any]]:
    """One client's round: start from the server's adapter, train on its own examples, return the adapter."""
    load_adapter_state(model, global_state)
    with tempfile.TemporaryDirectory(prefix=f"fedpetuning-{client}-") as tmp:
        trainer = local_trainer(
            local_recipe(cfg, client, round_),
            model,
            tokenizer,
            examples,
            Path(tmp),
            max_steps=cfg.fedpetuning.local_steps,
            use_cpu=cfg.run.device == "cpu",
        )
        trainer.train()
        summary = training_summary(trainer)
    return adapter_state(model), summary


def _run(cfg: FedGRPOConfig, split: FederatedSplit, clients: list[str], resume: bool) -> dict[str, Any]:
    """The in-process rounds: every selected client trains in turn on the one shared model."""
    fp = cfg.fedpetuning
    book = RunBook(cfg, split, resume)
    for round_ in range(book.first_round, fp.rounds + 1):
        start = time.perf_counter()
        stats, updates = RoundStats(rounds=1), []
        local: dict[str, dict[str, Any]] = {}
        for client in sample_clients(clients, fp.clients_per_round, cfg.seed, round_):
            examples = split.clients[client]
            stats.bytes_down_per_client[client] += book.adapter_bytes
            try:
                update, summary = train_locally(
                    cfg, book.model, book.tokenizer, client, examples, book.global_state, round_
                )
            except Exception as err:  # one client's failure leaves it out of this round, not the run
                log.exception("round %d: client %s failed", round_, client)
                stats.rejected["client_failed"] += 1
                local[client] = {"error": f"{type(err).__name__}: {err}"[:500]}
                continue
            stats.bytes_up_per_client[client] += wire_bytes(update)
            local[client] = {**summary, "examples": len(examples)}
            problem = book.refuse(round_, client, update, stats)
            if problem is None:
                updates.append((update, len(examples)))
            else:
                local[client]["error"] = f"adapter dropped: {problem}"
        averaged = weighted_average(updates) if updates else None
        book.end_round(round_, stats, averaged, local, time.perf_counter() - start)
    return book.finish({"kind": "in_process"})


class RunBook:
    """The server's side of a fedpetuning run, whichever transport: the policy and its averaged
    adapter, the evaluation before and after, one ``metrics.jsonl`` row and one checkpoint per round,
    the byte totals, and ``results.json``."""

    def __init__(self, cfg: FedGRPOConfig, split: FederatedSplit, resume: bool) -> None:
        self.cfg, self.out = cfg, cfg.output_dir
        start_run(cfg, resume)
        self.split_info = split_summary(split)
        write_json_atomic(self.out / "split.json", self.split_info)
        lo = cfg.model.lora
        log.info("fedpetuning: policy %s with a LoRA adapter (r=%d)", cfg.model.name_or_path, lo.r)
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.model = policy_with_adapter(cfg)
        self.evaluate = held_out_evaluator(cfg, self.tokenizer, split.heldout)
        self.before = evaluate_before(cfg, self.model, self.tokenizer, split.heldout, resume)
        self.checkpoints, self.metrics_path = self.out / "checkpoints", self.out / "metrics.jsonl"
        self.total, self.first_round = RoundStats(), 1
        self.global_state = adapter_state(self.model)
        restored = restore(self.checkpoints, self.metrics_path) if resume else None
        if restored is not None:
            done, self.global_state, self.total = restored
            self.first_round = done + 1
            load_adapter_state(self.model, self.global_state)
        else:
            truncate_metrics(self.metrics_path, 0)
            (self.out / CURVE_FILE).unlink(missing_ok=True)
        self.adapter_bytes = wire_bytes(self.global_state)
        log.info(
            "fedpetuning: rounds %d to %d, %s, an adapter of %d tensors: %.1f KB as an ArrayRecord",
            self.first_round,
            cfg.fedpetuning.rounds,
            cfg.fedpetuning.method.upper(),
            len(self.global_state),
            self.adapter_bytes / 1e3,
        )

    def refuse(self, round_: int, client: str, update: AdapterState, stats: RoundStats) -> str | None:
        """Why a client's adapter may not enter the average (logged and counted), or None."""
        problem = update_problem(update, self.global_state)
        if problem is not None:
            log.warning("round %d: dropped the adapter of %s: %s", round_, client, problem)
            stats.rejected["bad_adapter"] += 1
        return problem

    def end_round(
        self,
        round_: int,
        stats: RoundStats,
        averaged: AdapterState | None,
        local: dict[str, dict[str, Any]],
        seconds: float,
    ) -> None:
        """The new averaged adapter (None when no client's was accepted: the adapter stays), then the
        round's row and checkpoint."""
        if averaged is not None:
            self.global_state = to_wire(averaged)
            load_adapter_state(self.model, self.global_state)
        else:
            log.error("round %d: no client adapter to average; the server's adapter is unchanged", round_)
        stats.bytes_down = sum(stats.bytes_down_per_client.values())
        stats.bytes_up = sum(stats.bytes_up_per_client.values())
        stats.seconds = seconds
        self.total.merge(stats)
        _append_metrics(self.metrics_path, round_, stats, local)
        every, rounds = self.cfg.eval.every_steps, self.cfg.fedpetuning.rounds  # the curve: per round
        curve_point(self.out / CURVE_FILE, round_, rounds, every, self.evaluate, self.model)
        save_checkpoint(
            self.checkpoints, round_, self.global_state, self.total, self.cfg.run.save_total_limit
        )
        log.info(
            "round %d/%d: %d clients, loss %s, %.1f KB down, %.1f KB up, %.1f s",
            round_,
            self.cfg.fedpetuning.rounds,
            len(local),
            {c: s.get("final_loss") for c, s in local.items()},
            stats.bytes_down / 1e3,
            stats.bytes_up / 1e3,
            seconds,
        )

    def finish(self, transport: dict[str, Any]) -> dict[str, Any]:
        """The final adapter, the evaluation after, and ``results.json`` with FedGRPO's keys."""
        cfg, out, total = self.cfg, self.out, self.total
        self.model.save_pretrained(str(out / "final"))
        after = self.evaluate(self.model, "after") if cfg.eval.after else None
        rows = read_metrics(self.metrics_path)
        round_seconds = [r["seconds"] for r in rows[1:]] or [r["seconds"] for r in rows]
        summary = total.summary()
        results = {
            "name": cfg.name,
            "method": "fedpetuning",
            "local_method": cfg.fedpetuning.method,
            "steps": total.rounds,  # server updates: one FedAvg per round
            "client_steps": sum(r["client_steps"] for r in rows),
            "train_seconds": round(sum(r["seconds"] for r in rows), 1),
            "seconds_per_step": round(sum(round_seconds) / max(len(round_seconds), 1), 2),
            "peak_rss_mb": round(peak_rss_mb()),
            "before": to_json(self.before),
            "after": to_json(after),
            "communication": {
                **{k: summary[k] for k in COMMUNICATION_KEYS},
                "adapter_bytes": self.adapter_bytes,
                "per_round": [
                    {"round": r["round"], "bytes_down": r["fed/bytes_down"], "bytes_up": r["fed/bytes_up"]}
                    for r in rows
                ],
            },
            "selection": None,
            "split": self.split_info,
            "transport": transport,
        }
        write_json_atomic(out / "results.json", results)
        log_outcome(self.before, after, total, "adapters", out / "results.json")
        return results


def _append_metrics(path: Path, round_: int, stats: RoundStats, local: dict[str, dict[str, Any]]) -> None:
    """One ``metrics.jsonl`` row per round: ``step`` is the round (what resume truncates by)."""
    summary = stats.summary()
    row = {
        "step": round_,
        "round": round_,
        "seconds": round(stats.seconds, 3),
        "peak_rss_mb": round(peak_rss_mb()),
        "clients": list(local),
        "client_steps": sum(s.get("steps", 0) for s in local.values()),
        "local": local,
        **{k: summary[k] for k in COMMUNICATION_KEYS if k != "fed/rounds"},
        "fed/rejected": summary["fed/rejected"],
    }
    with path.open("a") as fh:
        fh.write(json.dumps(finite(row), allow_nan=False) + "\n")


def save_checkpoint(folder: Path, round_: int, state: AdapterState, total: RoundStats, keep: int) -> None:
    """``checkpoint-ROUND``: the averaged adapter and the byte totals, then the ``COMPLETE`` marker
    last; only the newest ``keep`` complete ones are kept."""
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{round_}"
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / ADAPTER_FILE))
    write_json_atomic(path / STATE_FILE, {"round": round_, "communication": total.to_json()})
    (path / COMPLETE_MARKER).write_text(str(round_))
    for _, old in complete_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore(folder: Path, metrics_path: Path) -> tuple[int, AdapterState, RoundStats] | None:
    """The last complete round's adapter and byte totals; metrics after it are dropped (run again)."""
    from safetensors.torch import load_file

    point = resume_point(folder, metrics_path)
    if point is None:
        return None
    round_, path = point
    state = json.loads((path / STATE_FILE).read_text())
    log.info("resuming after round %d from %s", round_, path)
    return round_, load_file(str(path / ADAPTER_FILE)), RoundStats.from_json(state["communication"])
