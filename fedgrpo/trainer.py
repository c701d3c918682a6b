"""A FedGRPO run: data split, clients behind a transport, TRL's GRPOTrainer with federated rewards.

TRL's ``GRPOTrainer`` does generation, clipping, KL and the loss. FedGRPO adds what it lacks: the
federation (selector, transport, reply checks) as a reward function, the group-relative advantage
computed per expert, checkpoints that are complete or ignored, per-step metrics, and held-out
evaluation before and after.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer

from fedgrpo.checkpoints import (
    COMPLETE_MARKER,
    STATE_FILE,
    complete_checkpoints,
    remove_torn_checkpoints,
    write_json_atomic,
)
from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator, ModelEvaluator
from fedgrpo.client.experts import ExpertRecipe, ensure_experts, load_experts, read_meta
from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.data import Example, FederatedSplit, Question, build_split, score_answer
from fedgrpo.evaluate import DomainAccuracy, accuracy_table, evaluate_policy, to_json
from fedgrpo.federation import FederatedRewards, GroupRecord
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.prompting import build_messages, extract_answer
from fedgrpo.selection import (
    ConfidenceGraph,
    ConfidenceGraphSelector,
    OracleSelector,
    Selector,
    build_confidence_graph,
    make_selector,
    mean_pooled_embedder,
)
from fedgrpo.transport import InProcessTransport, Transport

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose checkpoints also hold the federation's state and end with a marker file."""

    def __init__(self, *args: Any, federated_rewards: FederatedRewards, **kwargs: Any) -> None:
        super().__init__(*args, reward_funcs=[federated_rewards], **kwargs)
        self.federated_rewards = federated_rewards

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        write_json_atomic(folder / STATE_FILE, self.federated_rewards.state_dict())
        (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))  # written last


class MetricsCallback(TrainerCallback):
    """One JSON line per logged step: TRL's numbers plus the federation's (bytes, rejects, spread)."""

    def __init__(self, path: Path, rewards: FederatedRewards, audit: RoutingAudit | None = None) -> None:
        self.path = path
        self.rewards = rewards
        self.audit = audit
        self._last = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not logs or "train_runtime" in logs:
            return
        now = time.perf_counter()
        row = {
            "step": state.global_step,
            "seconds": round(now - self._last, 3),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        self._last = now
        row.update({f"trl/{k}": v for k, v in logs.items()})
        row.update(self.rewards.pending.summary())
        if self.audit is not None:
            row.update(self.audit.summary(self.rewards.pending_groups))
        self.rewards.pending = type(self.rewards.pending)()
        self.rewards.pending_groups = []
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if row["fed/rejected_total"]:
            log.warning(
                "step %d: %d replies rejected %s",
                state.global_step,
                row["fed/rejected_total"],
                row["fed/rejected"],
            )


def prepare_resume(checkpoints: Path, metrics_path: Path, rewards: FederatedRewards) -> Path | None:
    """Drop torn checkpoints, restore the federation's state and the metrics up to the last complete one."""
    for torn in remove_torn_checkpoints(checkpoints):
        log.warning("removed incomplete checkpoint %s", torn)
    done = complete_checkpoints(checkpoints)
    if not done:
        log.info("nothing to resume in %s; starting from step 0", checkpoints)
        truncate_metrics(metrics_path, 0)
        return None
    step, folder = done[-1]
    rewards.load_state_dict(json.loads((folder / STATE_FILE).read_text()))
    truncate_metrics(metrics_path, step)
    log.info("resuming from %s (step %d)", folder, step)
    return folder


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines for steps after the checkpoint we resume from: they will be run again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


# -- assembly -------------------------------------------------------------------------------------
def build_clients(cfg: FedGRPOConfig, split: FederatedSplit) -> list[Client]:
    """The available clients, each with its private data and, with ``clients.model``, a client model.

    The base ``clients.model`` is loaded once. With ``clients.expert.method`` sft or grpo every client
    trains (or finds cached) its own LoRA adapter on its private data, and all adapters sit on that one base;
    otherwise every client's ModelEvaluator uses the base as it is. A client whose model fails to
    load or train is reported unavailable (logged with the reason) and left out; fewer than M
    available clients is an error.
    """
    models, unavailable = _client_models(cfg, split)
    clients = []
    for name, examples in split.clients.items():
        if name in unavailable:
            log.warning("client %s unavailable: %s", name, unavailable[name])
            continue
        clients.append(make_client(cfg, name, examples, models.get(name)))
    m = cfg.federation.experts_per_question
    if len(clients) < m:
        raise RuntimeError(
            f"only {len(clients)} of {len(split.clients)} clients are available, fewer than "
            f"federation.experts_per_question (M={m}); unavailable: {unavailable}"
        )
    return clients


def make_client(
    cfg: FedGRPOConfig, name: str, examples: list[Example], model: tuple[Any, Any, str | None] | None
) -> Client:
    """One client: answer-based evaluation on its examples, plus ``model`` = (model, tokenizer, adapter
    name) for model-based evaluation and competence queries when it has one."""
    fmt, cs = cfg.federation.format_reward, cfg.clients
    model_ev = None
    if model is not None:
        net, tokenizer, adapter = model
        model_ev = ModelEvaluator(
            net,
            tokenizer,
            mode=cs.evaluation,
            samples=cs.samples,
            max_new_tokens=cs.max_new_tokens,
            temperature=cs.temperature,
            format_reward=fmt,
            seed=cfg.seed,
            worked_example=cs.expert.worked_example if adapter else cfg.model.worked_example,
            adapter=adapter,
        )
    return Client(name, examples, DualEvaluator(AnswerEvaluator(examples, fmt), model_ev), fmt)


def expert_recipe(cfg: FedGRPOConfig) -> ExpertRecipe:
    ex = cfg.clients.expert
    assert cfg.clients.model is not None
    return ExpertRecipe(
        base_model=cfg.clients.model,
        method="sft" if ex.method == "none" else ex.method,
        epochs=ex.epochs,
        learning_rate=ex.learning_rate,
        batch_size=ex.batch_size,
        lora_r=ex.lora_r,
        lora_alpha=ex.lora_alpha,
        worked_example=ex.worked_example,
        seed=cfg.seed,
        num_generations=ex.num_generations,
        max_completion_length=ex.max_completion_length,
    )


def train_client_experts(cfg: FedGRPOConfig, split: FederatedSplit) -> tuple[dict[str, Path], dict[str, str]]:
    """Each client's cached expert adapter (training the missing ones), and why any client failed."""
    cache = Path(cfg.clients.expert.cache_dir).expanduser() if cfg.clients.expert.cache_dir else None
    return ensure_experts(expert_recipe(cfg), split.clients, cache)


def train_clients(cfg: FedGRPOConfig) -> dict[str, dict[str, Any]]:
    """``fedgrpo train-clients``: train (or find cached) every client's expert; a table per client.

    Runs the same split and recipe as ``fedgrpo run``, so the run afterwards finds every adapter in
    the cache. ``clients.expert.method: none`` is taken as ``sft`` here (there is nothing else to train).
    """
    if cfg.clients.model is None:
        raise ConfigError("train-clients needs clients.model: the base each client's expert starts from")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split = build_data(cfg)
    folders, failed = train_client_experts(cfg, split)
    report: dict[str, dict[str, Any]] = {}
    for name in split.clients:
        if name in failed:
            report[name] = {"error": failed[name]}
            continue
        meta = read_meta(folders[name])
        report[name] = {
            "domains": split.client_domains[name],
            "method": meta.get("method", "sft"),
            "examples": meta["examples"],
            "steps": meta["steps"],
            "loss": f"{meta['first_loss']} -> {meta['final_loss']}",
            "train_seconds": meta["train_seconds"],
            "adapter": str(folders[name]),
        }
    return report


def _client_models(
    cfg: FedGRPOConfig, split: FederatedSplit
) -> tuple[dict[str, tuple[Any, Any, str | None]], dict[str, str]]:
    """(model, tokenizer, adapter name) per client with a model, and the reason per unavailable one."""
    name = cfg.clients.model
    if name is None:
        return {}, {}
    log.info("loading client model %s (once, shared by all clients)", name)
    try:
        tokenizer = load_tokenizer(name)
        base = load_policy(name)
    except Exception as err:  # a client that cannot load its model is unavailable, not fatal
        reason = f"client model {name!r} failed to load: {type(err).__name__}: {err}"
        return {}, dict.fromkeys(split.clients, reason)
    base.requires_grad_(False)
    if cfg.clients.expert.method == "none":
        return {c: (base, tokenizer, None) for c in split.clients}, {}
    folders, failed = train_client_experts(cfg, split)
    if not folders:
        return {}, failed
    model = load_experts(base, folders)
    return {c: (model, tokenizer, c) for c in folders}, failed


def build_selector(
    cfg: FedGRPOConfig,
    split: FederatedSplit,
    transport: Transport,
    tokenizer: Any,
    out: Path,
    resume: bool,
) -> tuple[Selector, dict[str, Any] | None]:
    """The configured selector; for the confidence graph, also its build cost (None otherwise).

    The graph is built once per run and saved as ``confidence_graph.pt``; ``--resume`` loads it (the
    checkpoint's selector state then restores the online updates). Questions and exemplars are
    embedded by a frozen copy of the server model, so embeddings do not drift as the policy trains.
    """
    fed = cfg.federation
    if fed.selector == "oracle":
        names = transport.client_names
        return OracleSelector({c: split.client_domains[c] for c in names}), None
    if fed.selector != "confidence-graph":
        return make_selector(fed.selector, cfg.seed), None
    encoder = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    encoder.requires_grad_(False)
    embed = mean_pooled_embedder(encoder, tokenizer)
    graph_path, stats_path = out / "confidence_graph.pt", out / "selection.json"
    if resume and graph_path.exists() and stats_path.exists():
        graph = ConfidenceGraph.load(graph_path)
        missing = sorted(set(transport.client_names) - set(graph.clients))
        if missing:
            raise RuntimeError(f"{graph_path} has no row for clients {missing}; start a new run")
        stats = json.loads(stats_path.read_text())
        log.info("loaded the confidence graph from %s", graph_path)
    else:
        graph, stats = build_confidence_graph(
            transport, split.auxiliary, embed, fed.neighbours, samples=cfg.clients.samples
        )
        graph.save(graph_path)
        write_json_atomic(stats_path, stats)
    return ConfidenceGraphSelector(graph, embed, fed.epsilon, seed=cfg.seed), stats


class RoutingAudit:
    """Judges the federation's rounds with labels the experiment holds, for metrics only.

    The run knows every client's data (it made the split), so it can say whether an expert's reward
    matched the candidate's true correctness and whether routed experts hold the question's domain.
    This lives on the run's side: the server-side federation never sees these labels, and nothing
    here feeds back into routing, rewards or training.
    """

    def __init__(self, split: FederatedSplit) -> None:
        self._by_qid = {ex.qid: ex for examples in split.clients.values() for ex in examples}
        self._by_qid.update({ex.qid: ex for ex in split.train_examples})
        self._client_domains = split.client_domains

    def summary(self, groups: list[GroupRecord]) -> dict[str, float | None]:
        checked = agree = routed = held = 0
        for g in groups:
            example = self._by_qid.get(g.question.qid)
            if example is not None:
                for i, text in enumerate(g.candidates):
                    correct = score_answer(example, extract_answer(text)) >= 1.0
                    for r in g.rewards[:, i].tolist():
                        if not math.isnan(r):
                            checked += 1
                            agree += int((r >= 0.5) == correct)
            for client in g.asked:
                routed += 1
                held += int(self._client_domains.get(client, {}).get(g.question.domain, 0) > 0)
        return {
            "fed/reward_correctness": agree / checked if checked else None,
            "fed/routed_domain_share": held / routed if routed else None,
        }


def build_transport(cfg: FedGRPOConfig, clients: list[Client]) -> Transport:
    if cfg.federation.transport == "in_process":
        return InProcessTransport(clients)
    raise ValueError(
        f"transport {cfg.federation.transport!r} is not built here: a Flower engine runs the ServerApp, "
        "which hands run() its FlowerTransport (see fedgrpo.transport.flower)"
    )


def train_dataset(questions: list[Question], worked_example: bool) -> Dataset:
    """What the server trains on: questions only. There is no answer column to leak."""
    return Dataset.from_list(
        [
            {
                "prompt": build_messages(q.question, worked_example),
                "qid": q.qid,
                "question": q.question,
                "domain": q.domain,
            }
            for q in questions
        ]
    )


def grpo_args(cfg: FedGRPOConfig, checkpoints: Path) -> GRPOConfig:
    kwargs: dict[str, Any] = {
        "max_steps": 20,
        "num_generations": 8,
        "per_device_train_batch_size": 16,
        "max_completion_length": 64,
        "learning_rate": 5e-5,
        "beta": 0.0,
        "temperature": 1.0,
        "logging_steps": 1,
        "report_to": "none",
        "log_completions": False,
    }
    kwargs.update(cfg.grpo)
    kwargs.update(
        output_dir=str(checkpoints),
        seed=cfg.seed,
        use_cpu=cfg.run.device == "cpu",
        scale_rewards="none",  # the federated objective already normalised per expert
        save_strategy="steps",
        save_steps=cfg.run.save_steps,
        save_total_limit=cfg.run.save_total_limit,
    )
    kwargs.setdefault("bf16", False)
    return GRPOConfig(**kwargs)


def make_trainer(
    cfg: FedGRPOConfig,
    model: Any,
    tokenizer: Any,
    dataset: Dataset,
    rewards: FederatedRewards,
    checkpoints: Path,
) -> FedGRPOTrainer:
    """TRL's trainer on the federated reward function, with LoRA when the config asks for it."""
    peft_config = None
    if cfg.model.lora.enabled:
        from peft import LoraConfig

        lo = cfg.model.lora
        peft_config = LoraConfig(
            r=lo.r,
            lora_alpha=lo.alpha,
            lora_dropout=lo.dropout,
            target_modules=lo.target_modules,
            task_type="CAUSAL_LM",
        )
    return FedGRPOTrainer(
        model=model,
        args=grpo_args(cfg, checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        federated_rewards=rewards,
    )


def build_data(cfg: FedGRPOConfig) -> FederatedSplit:
    """The run's seeded split: client data, server questions, auxiliary and held-out sets."""
    d = cfg.data
    try:
        return build_split(
            d.domain_specs(),
            d.num_clients,
            d.examples_per_client,
            d.num_train_questions,
            d.num_auxiliary,
            d.heldout_per_domain,
            d.partition,
            d.alpha,
            cfg.seed,
            ground_truth=d.setting == "ground-truth",
        )
    except ValueError as err:  # sizes the domains cannot fill: a config error, found before any model loads
        raise ConfigError(f"data: {err}") from err


def split_summary(split: FederatedSplit) -> dict[str, Any]:
    return {
        "client_domains": split.client_domains,
        "setting": "ground-truth" if split.ground_truth else "no-ground-truth",
        "train_questions": len(split.train_questions),
        "auxiliary": len(split.auxiliary),
        "heldout": {d: len(v) for d, v in split.heldout.items()},
    }


def run(cfg: FedGRPOConfig, resume: bool = False, transport: Transport | None = None) -> dict[str, Any]:
    """Run a whole experiment into ``cfg.output_dir``; returns the results that are also saved there.

    With a Flower transport in the config and no ``transport`` given, the configured Flower engine is
    started and runs this same function inside its ServerApp, handing it a FlowerTransport.
    """
    if transport is None and cfg.federation.transport != "in_process":
        from fedgrpo.transport.flower.launch import run_on_flower

        return run_on_flower(cfg, resume)
    out = cfg.output_dir
    checkpoints = out / "checkpoints"
    if out.exists() and not resume and (complete_checkpoints(checkpoints) or (out / "results.json").exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or set run.output_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    _attach_log_file(out / "run.log")
    config_path = out / "config.yaml"
    if resume and config_path.exists() and config_path.read_text() != cfg.to_yaml():
        log.warning("resuming with a config that differs from %s; the new one is used", config_path)
    config_path.write_text(cfg.to_yaml())

    set_seed(cfg.seed)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)

    log.info(
        "building data: domains %s, K=%d, %s",
        [d.name for d in cfg.data.domain_specs()],
        cfg.data.num_clients,
        cfg.data.partition,
    )
    split = build_data(cfg)
    write_json_atomic(out / "split.json", split_summary(split))
    if transport is None:
        transport = build_transport(cfg, build_clients(cfg, split))

    log.info("loading policy %s", cfg.model.name_or_path)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    selector, selection = build_selector(cfg, split, transport, tokenizer, out, resume)
    rewards = FederatedRewards(
        transport,
        selector,
        cfg.federation.experts_per_question,
        cfg.num_generations,
        cfg.federation.aggregation,
        online_update_rate=cfg.federation.online_update_rate,
    )
    ev = cfg.eval

    def evaluate(policy: Any, tag: str) -> dict[str, DomainAccuracy]:
        start = time.perf_counter()
        res = evaluate_policy(
            policy,
            tokenizer,
            split.heldout,
            ev.max_new_tokens,
            ev.batch_size,
            cfg.model.worked_example,
            ev.max_per_domain,
        )
        log.info("evaluation %s took %.0f s", tag, time.perf_counter() - start)
        return res

    before = None
    before_path = out / "eval_before.json"
    if ev.before:
        if resume and before_path.exists():
            before = {k: DomainAccuracy(**v) for k, v in json.loads(before_path.read_text()).items()}
        else:
            before = evaluate(model, "before")
            write_json_atomic(before_path, to_json(before))
            log.info("before training:\n%s", accuracy_table(before, None))

    trainer = make_trainer(
        cfg,
        model,
        tokenizer,
        train_dataset(split.train_questions, cfg.model.worked_example),
        rewards,
        checkpoints,
    )
    metrics_path = out / "metrics.jsonl"
    trainer.add_callback(MetricsCallback(metrics_path, rewards, RoutingAudit(split)))

    resume_from = prepare_resume(checkpoints, metrics_path, rewards) if resume else None
    if not resume:
        truncate_metrics(metrics_path, 0)

    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        last = complete_checkpoints(checkpoints)
        log.error(
            "interrupted; last complete checkpoint: %s. Continue with --resume.",
            last[-1][1] if last else "none",
        )
        raise
    train_seconds = time.perf_counter() - start
    trainer.save_model(str(out / "final"))

    after = evaluate(trainer.model, "after") if ev.after else None
    steps = trainer.state.global_step
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    step_seconds = [r["seconds"] for r in rows[1:]] or [r["seconds"] for r in rows]
    results = {
        "name": cfg.name,
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(sum(step_seconds) / max(len(step_seconds), 1), 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "before": to_json(before),
        "after": to_json(after),
        "communication": rewards.total.summary(),
        "selection": selection,
        "split": split_summary(split),
        "transport": transport.summary(),
    }
    write_json_atomic(out / "results.json", results)
    transport.close()
    comm = rewards.total
    log.info(
        "\n%s\ncommunication: %d rounds, %.1f KB down, %.1f KB up (%.1f KB per round); "
        "%d replies rejected\nresults: %s",
        accuracy_table(before, after),
        comm.rounds,
        comm.bytes_down / 1e3,
        comm.bytes_up / 1e3,
        (comm.bytes_down + comm.bytes_up) / 1e3 / max(comm.rounds, 1),
        sum(comm.rejected.values()),
        out / "results.json",
    )
    return results


def _attach_log_file(path: Path) -> None:
    root = logging.getLogger("fedgrpo")
    if any(
        isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()) for h in root.handlers
    ):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
