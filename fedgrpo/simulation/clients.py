"""Simulated clients from the config: each with its private data and, optionally, its own model.

Only a simulation builds clients this way (the experimenter holds every client's data). A deployed
organisation builds its one client from its own files (:mod:`fedgrpo.flower.client_app`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedgrpo.client import Client, ClientModel, Evaluator
from fedgrpo.client.experts import ExpertRecipe, ensure_experts, load_experts, read_meta
from fedgrpo.client.factory import endpoint_model, in_process_model, make_client, private_release
from fedgrpo.client.privacy_state import STATE_FOLDER
from fedgrpo.client.private_training import TrainingPrivacy, training_privacy
from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.models.loading import load_policy, load_tokenizer, run_device
from fedgrpo.simulation.adversaries import AdversarialEvaluator
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.partition import FederatedSplit

log = logging.getLogger(__name__)

PRIVACY_STATE = STATE_FOLDER  # the simulated clients' privacy caches and ledgers, in the run folder


def _state(folder: Path | None, name: str) -> str | None:
    return None if folder is None else str(folder / f"{name}.json")


def build_clients(cfg: FedGRPOConfig, split: FederatedSplit, state_dir: Path | None = None) -> list[Client]:
    """The available clients, each with its private data and, with ``clients.model`` or
    ``clients.endpoint``, a client model.

    The base ``clients.model`` is loaded once. With ``clients.expert.method`` sft or grpo every client
    trains (or finds cached) its own LoRA adapter on its private data, and all adapters sit on that one
    base; otherwise every client uses the base as it is. With ``clients.endpoint`` every client scores
    through that one endpoint. A client whose model fails to load or train is reported unavailable
    (logged with the reason) and left out; fewer than M available is an error. The clients named in
    ``clients.adversaries`` lie as told (experiments only).

    With ``clients.privacy.enabled`` each client privatises what it sends; ``state_dir``: where each
    keeps its cache and ledger between processes (Flower's Simulation Engine), else in memory.
    """
    models, unavailable, experts = client_models(cfg, split)
    training = expert_training_privacy(experts) if cfg.clients.privacy.enabled else {}
    clients = []
    for name, examples in split.clients.items():
        if name in unavailable:
            log.warning("client %s unavailable: %s", name, unavailable[name])
            continue
        state = _state(state_dir, name)
        privacy = private_release(cfg, cfg.clients.privacy, name, state, training=training.get(name))
        clients.append(make_client(cfg, name, examples, models.get(name), adversary(cfg, name), privacy))
    m = cfg.federation.experts_per_question
    if len(clients) < m:
        raise RuntimeError(
            f"only {len(clients)} of {len(split.clients)} clients are available, fewer than "
            f"federation.experts_per_question (M={m}); unavailable: {unavailable}"
        )
    return clients


def adversary(cfg: FedGRPOConfig, name: str) -> Callable[[Evaluator], Evaluator] | None:
    """How ``clients.adversaries`` makes client ``name`` lie, or None for an honest client."""
    behaviour = cfg.clients.adversaries.get(name)
    if behaviour is None:
        return None
    log.warning("client %s is a simulated adversary: %s", name, behaviour)
    return lambda honest: AdversarialEvaluator(honest, behaviour, cfg.seed, name)


def expert_training_privacy(experts: dict[str, Path]) -> dict[str, TrainingPrivacy]:
    """What each client's DP-SGD expert cost (``clients.expert.dp``), read from its folder: composed
    into its per-example ledger, which then covers its model's releases too. Non-private experts have
    no record and are left out."""
    costs = {name: training_privacy(folder) for name, folder in experts.items()}
    return {name: cost for name, cost in costs.items() if cost is not None}


def train_client_experts(cfg: FedGRPOConfig, split: FederatedSplit) -> tuple[dict[str, Path], dict[str, str]]:
    """Each client's cached expert adapter (training the missing ones), and why any client failed."""
    assert cfg.clients.model is not None
    ex = cfg.clients.expert
    cache = Path(ex.cache_dir).expanduser() if ex.cache_dir else None
    return ensure_experts(ExpertRecipe.from_settings(cfg.clients.model, ex, cfg.seed), split.clients, cache)


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


def client_models(
    cfg: FedGRPOConfig, split: FederatedSplit
) -> tuple[dict[str, ClientModel], dict[str, str], dict[str, Path]]:
    """The model of each client that has one (the base loaded once, the experts trained or taken from
    the cache), the reason per unavailable client, and each expert's folder (none without experts)."""
    cs = cfg.clients
    if cs.endpoint is not None:
        assert cs.endpoint_model is not None  # the config requires it with an endpoint
        # One evaluator for all: one reference cache, and one view of whether the endpoint is up.
        shared = endpoint_model(cfg, cs.endpoint, cs.endpoint_model)
        log.info("client model: %s at %s (shared by all clients)", cs.endpoint_model, cs.endpoint)
        return dict.fromkeys(split.clients, shared), {}, {}
    name = cs.model
    if name is None:
        return {}, {}, {}
    # in a simulation the organisations share the run's machine, and so its accelerator
    device = run_device(cfg.run.device)
    log.info("loading client model %s on %s (once, shared by all clients)", name, device)
    try:
        tokenizer = load_tokenizer(name)
        base = load_policy(name, device=device)
    except Exception as err:  # a client that cannot load its model is unavailable, not fatal
        reason = f"client model {name!r} failed to load: {type(err).__name__}: {err}"
        return {}, dict.fromkeys(split.clients, reason), {}
    base.requires_grad_(False)
    if cs.expert.method == "none":
        return {c: in_process_model(cfg, base, tokenizer, None) for c in split.clients}, {}, {}
    folders, failed = train_client_experts(cfg, split)
    if not folders:
        return {}, failed, {}
    model = load_experts(base, folders)
    return {c: in_process_model(cfg, model, tokenizer, c) for c in folders}, failed, folders
