"""From the config to the server's parts of a run: its own inputs (a deployed server's files; a
simulation's come from :mod:`fedgrpo.simulation.data`), the selector (building or loading the
confidence graph through the clients' competence replies) and the federated advantage.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgrpo.config import ConfigError, FedGRPOConfig, ServerFiles
from fedgrpo.data import Example, Question, read_labelled, read_questions
from fedgrpo.models.loading import load_policy, run_device
from fedgrpo.selection import ConfidenceGraph, Selector, make_selector, mean_pooled_embedder
from fedgrpo.server import FederatedAdvantage, build_confidence_graph
from fedgrpo.server.canaries import Canaries, with_canaries
from fedgrpo.server.reputation import Reputation
from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerData:
    """What the server itself holds: unlabelled training questions, a small labelled auxiliary set
    (expert selection), labelled held-out sets per domain (evaluation) and labelled canaries (hidden
    spot checks, already among ``train_questions``: see :func:`fedgrpo.server.canaries.with_canaries`)."""

    train_questions: list[Question]
    auxiliary: list[Example]
    heldout: dict[str, list[Example]]
    canaries: list[Example] = field(default_factory=list)


def server_data_from_files(files: ServerFiles, canary_share: float = 0.0) -> ServerData:
    """A deployed server's data: its own files, nothing derived from a seed or from any client; with
    ``canary_share``, that share of the prompts are canaries from ``server.canaries``."""
    if files.questions is None or files.heldout is None:
        raise ConfigError("a deployed server needs server.questions and server.heldout")
    try:
        questions = read_questions(Path(files.questions).expanduser())
        auxiliary = read_labelled(Path(files.auxiliary).expanduser()) if files.auxiliary else []
        heldout: dict[str, list[Example]] = defaultdict(list)
        for ex in read_labelled(Path(files.heldout).expanduser()):
            heldout[ex.domain].append(ex)
        given = read_labelled(Path(files.canaries).expanduser()) if canary_share and files.canaries else []
    except ValueError as err:  # a bad file of the server's own: the server's operator must fix it
        raise ConfigError(f"server files: {err}") from err
    prompts, canaries = with_canaries(questions, given, canary_share)
    log.info(
        "server files: %d training questions, %d auxiliary, held-out %s, %d canaries",
        len(questions),
        len(auxiliary),
        {d: len(v) for d, v in heldout.items()},
        len(canaries),
    )
    return ServerData(prompts, auxiliary, dict(heldout), canaries)


def build_selector(
    cfg: FedGRPOConfig,
    auxiliary: list[Example],
    transport: Transport,
    tokenizer: Any,
    out: Path,
    resume: bool,
    client_domains: dict[str, dict[str, int]] | None = None,
) -> tuple[Selector, dict[str, Any] | None]:
    """The configured selector; for the confidence graph, also its build cost (None otherwise).

    The graph is built once per run and saved as ``confidence_graph.pt``; ``--resume`` loads it (the
    checkpoint's selector state then restores the online updates). Questions and exemplars are
    embedded by a frozen copy of the server model, so embeddings do not drift as the policy trains.
    """
    fed = cfg.federation
    if fed.selector != "confidence-graph":
        return make_selector(fed.selector, seed=cfg.seed, client_domains=client_domains), None
    encoder = load_policy(cfg.model.name_or_path, cfg.model.dtype, run_device(cfg.run.device))
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
            transport, auxiliary, embed, fed.neighbours, samples=cfg.clients.samples
        )
        graph.save(graph_path)
        write_json_atomic(stats_path, stats)
    selector = make_selector(fed.selector, seed=cfg.seed, graph=graph, embed=embed, epsilon=fed.epsilon)
    return selector, stats


def build_advantage(
    cfg: FedGRPOConfig,
    transport: Transport,
    selector: Selector,
    canaries: list[Example] | None = None,
    competence: dict[str, float] | None = None,
) -> FederatedAdvantage:
    """The reward round; with canaries, their reputation is kept in the run folder's ``reputation.json``
    (``competence``: each client's accuracy on the competence queries, what its honesty is held to)."""
    fed = cfg.federation
    spot = fed.canaries
    checks = None
    if canaries:
        reputation = Reputation(spot.threshold, spot.confidence, spot.min_questions, spot.margin, competence)
        one_answer = cfg.clients.evaluation == "agreement"  # each client calls right one answer's candidates
        checks = Canaries(
            canaries, reputation, fed.format_reward, cfg.output_dir, spot.fanout, cfg.seed, one_answer
        )
    return FederatedAdvantage(
        transport,
        selector,
        fed.experts_per_question,
        cfg.num_generations,
        fed.aggregation,
        online_update_rate=fed.online_update_rate,
        format_reward=fed.format_reward,  # added by the server to well-formed candidates
        canaries=checks,
    )
