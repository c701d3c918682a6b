"""``local-only``: what the server learns without federating. FedGRPO's run, but every reward comes
from one organisation alone: the best of them.

"Best" is chosen as FedGRPO's confidence graph would rank them: each client answers the server's
auxiliary set once (the same competence query as a FedGRPO run with ``federation.selector:
confidence-graph``) and the client with the highest mean correctness over every exemplar
(``ConfidenceGraph.global_competence``) wins; a tie goes to the client holding more examples, then
to the first name. The server then trains exactly as FedGRPO does (same split, held-out set,
seed, GRPO settings, trainer and metrics) with that one client behind the transport, asked about
every question (``federation.selector: all``, ``federation.experts_per_question: 1``). It scores as
it would in the federation: by its own answers where it holds the question, its expert otherwise.

The gap between FedGRPO and this row is the value of federating: the rewards of the other
organisations. The choice is saved in the run folder (``local_only.json``) before training starts,
and ``--resume`` reuses it rather than asking the clients again.
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.selection import mean_pooled_embedder
from fedgrpo.server import build_confidence_graph
from fedgrpo.simulation.clients import PRIVACY_STATE, build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.in_process import run_on_split
from fedgrpo.simulation.partition import FederatedSplit
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.storage.checkpoints import complete_checkpoints
from fedgrpo.storage.run_folder import check_output_dir
from fedgrpo.transport import InProcessTransport, Transport

log = logging.getLogger(__name__)

CHOICE_FILE = "local_only.json"
CRITERION = "the confidence graph's competence: mean correctness on the server's auxiliary set"


def check_settings(cfg: FedGRPOConfig) -> None:
    """The competence query needs the clients' own models and the server's auxiliary set."""
    if not cfg.clients.has_model:
        raise ConfigError(
            "local-only picks its organisation by competence on the auxiliary set: set clients.model "
            "(or clients.endpoint)"
        )
    if cfg.data.num_auxiliary < 1:
        raise ConfigError("local-only needs data.num_auxiliary >= 1: the auxiliary set ranks the clients")


def choose_client(cfg: FedGRPOConfig, transport: Transport, split: FederatedSplit) -> dict[str, Any]:
    """The most competent client (ties: more examples, then the first name) and what it was chosen on."""
    encoder = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    encoder.requires_grad_(False)
    embed = mean_pooled_embedder(encoder, load_tokenizer(cfg.model.name_or_path))
    graph, stats = build_confidence_graph(
        transport, split.auxiliary, embed, cfg.federation.neighbours, samples=cfg.clients.samples
    )
    competence = dict(
        zip(graph.clients, (round(float(c), 6) for c in graph.global_competence()), strict=True)
    )
    held = {c: len(split.clients.get(c, [])) for c in graph.clients}
    best = max(sorted(graph.clients), key=lambda c: (competence[c], held[c]))
    return {
        "client": best,
        "criterion": CRITERION,
        "competence": competence,
        "examples": held,
        "query": {k: stats[k] for k in ("bytes_down", "bytes_up", "seconds")},
    }


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    check_settings(cfg)
    check_output_dir(cfg, resume)
    split = build_data(cfg)
    fl, out = cfg.flower, cfg.output_dir
    created = not out.exists()
    clients = build_clients(cfg, split, out / PRIVACY_STATE)
    try:
        if resume and (out / CHOICE_FILE).exists():
            choice = json.loads((out / CHOICE_FILE).read_text())
            log.info("local-only: resuming with %s, chosen before", choice["client"])
        else:
            choice = choose_client(cfg, InProcessTransport(clients, fl.max_message_bytes), split)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / CHOICE_FILE, choice)
        log.info("local-only: %s's rewards alone (competence %s)", choice["client"], choice["competence"])
        alone = [c for c in clients if c.name == choice["client"]]
        if not alone:
            raise RuntimeError(f"local-only: the chosen client {choice['client']} is not available")
        one = cfg.model_copy(
            update={
                "federation": cfg.federation.model_copy(update={"selector": "all", "experts_per_question": 1})
            }
        )
        transport = InProcessTransport(alone, fl.max_message_bytes, fl.rejoin_interval_s)
        results = run_on_split(one, transport, split, resume)
    except BaseException:
        if created and not complete_checkpoints(out / "checkpoints"):
            shutil.rmtree(out, ignore_errors=True)  # as a FedGRPO run: no half-made folder left behind
        raise
    results["local_only"] = choice
    write_json_atomic(out / "results.json", results)
    return results
