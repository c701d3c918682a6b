"""dpsda-fl on Flower's Simulation Engine: the Private Evolution votes travel as Flower messages.

The ServerApp runs the in-process baseline (:func:`fedgrpo.algorithms.dpsda.train.run`) unchanged but for
how a vote request reaches the clients: one ``query.pe_vote`` message per node, pushed at once and
pulled until ``flower.competence_timeout_s``. Each virtual client (``partition-id`` ->
``client-<id>`` of the seeded split) embeds its own examples and the request's samples with the
frozen encoder and answers with its noisy histogram
(:class:`~fedgrpo.algorithms.dpsda.private_evolution.VotingClient`, the same seeds as in process, so the
same votes). The request and the histogram are the in-process bytes, carried in one ``ConfigRecord``
each way and counted the same way. A node that fails, answers with something else or not at all is
counted and left out of the sum, as in process.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedgrpo.algorithms.dpsda import train as dpsda
from fedgrpo.algorithms.dpsda.private_evolution import VotingClient
from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import client_name, derive_seed
from fedgrpo.flower.launch import absolute_paths
from fedgrpo.flower.transport import wait_until
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.selection import mean_pooled_embedder
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.flower import simulate, virtual_client_config
from fedgrpo.storage.run_folder import check_output_dir

log = logging.getLogger(__name__)

VOTE = "query.pe_vote"
RECORD = "pe"  # the one ConfigRecord each way: {"request": bytes} down, {"client", "histogram"} up


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole dpsda-fl run on Flower's Simulation Engine, one virtual client per client."""
    cfg = absolute_paths(cfg)
    dpsda.check_settings(cfg)
    check_output_dir(cfg, resume)
    return simulate(cfg, make_server_app(cfg, resume), make_client_app(cfg.to_yaml()))


class FlowerVotes:
    """A :data:`~fedgrpo.algorithms.dpsda.evolution.VoteExchange` over a Flower ``Grid``: every node, every
    time."""

    def __init__(self, grid: Grid, cfg: FedGRPOConfig) -> None:
        self.grid, self.timeout = grid, cfg.flower.competence_timeout_s
        expected = min(cfg.flower.num_supernodes or cfg.data.num_clients, cfg.data.num_clients)
        self.nodes: list[int] = []

        def enough() -> bool:
            self.nodes = sorted(grid.get_node_ids())
            return len(self.nodes) >= expected

        wait_until(enough, cfg.flower.connect_timeout_s)
        if not self.nodes:
            raise RuntimeError(f"no Flower node joined within {cfg.flower.connect_timeout_s:.0f} s")
        log.info("PE voters: %d Flower nodes", len(self.nodes))

    def __call__(self, request: bytes) -> dict[str, bytes | BaseException]:
        messages = [
            Message(
                RecordDict({RECORD: ConfigRecord({"request": request})}), dst_node_id=node, message_type=VOTE
            )
            for node in self.nodes
        ]
        replies: dict[str, bytes | BaseException] = {}
        answered = set()
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            node = reply.metadata.src_node_id
            answered.add(node)
            name, value = read_vote(reply)
            replies[name] = value
        for node in set(self.nodes) - answered:
            replies[f"node-{node}"] = TimeoutError(f"no vote within {self.timeout:.0f} s")
        return replies


def read_vote(reply: Message) -> tuple[str, bytes | BaseException]:
    """The client's name and its histogram's bytes, or why there are none. Never raises."""
    name = f"node-{reply.metadata.src_node_id}"
    if reply.has_error():
        return name, RuntimeError(reply.error.reason)
    try:
        record = reply.content[RECORD]
        name = str(record["client"])
        histogram = record["histogram"]
    except Exception as err:  # a malformed reply is that client's problem, never the server's
        return name, ValueError(f"malformed vote reply: {type(err).__name__}: {err}")
    if not isinstance(histogram, bytes):
        return name, ValueError(f"the histogram is a {type(histogram).__name__}, not bytes")
    return name, histogram


def make_server_app(cfg: FedGRPOConfig, resume: bool = False) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        dpsda.run(cfg, resume, exchange=FlowerVotes(grid, cfg))

    return app


@functools.cache
def _client_side(config_text: str) -> tuple[FedGRPOConfig, Any, Any, float]:
    """Once per Ray worker: the config, the seeded split, the frozen encoder and the noise multiplier."""
    cfg = virtual_client_config(config_text)
    encoder = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    encoder.requires_grad_(False)
    embed = mean_pooled_embedder(encoder, load_tokenizer(cfg.model.name_or_path))
    return cfg, build_data(cfg), embed, dpsda.privacy_plan(cfg.dpsda)["noise_multiplier"]


def make_client_app(config_text: str) -> ClientApp:
    """Each virtual client votes on the server's samples with its own examples, and adds its noise."""
    app = ClientApp()

    @app.query("pe_vote")
    def vote(message: Message, context: Context) -> Message:
        cfg, split, embed, sigma = _client_side(config_text)
        name = client_name(int(context.node_config["partition-id"]))
        seed = derive_seed("dpsda", name, cfg.seed)  # the in-process client's
        client = VotingClient(name, split.clients[name], embed, sigma, seed, cfg.dpsda.iterations)
        histogram = client.handle(bytes(message.content[RECORD]["request"]))
        reply = RecordDict({RECORD: ConfigRecord({"client": name, "histogram": histogram})})
        return Message(reply, reply_to=message)

    return app
