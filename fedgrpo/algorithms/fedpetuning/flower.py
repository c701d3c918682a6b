"""fedpetuning on Flower's Simulation Engine: Flower's own FedAvg strategy over ``ArrayRecord``s.

The ServerApp hands the averaged adapter to ``flwr.serverapp.strategy.FedAvg.start``; Flower samples
the clients (``fraction_train`` = ``fedpetuning.clients_per_round``, with Flower's own sampler, seeded
from ``cfg.seed``), sends each the adapter as an ``ArrayRecord``, and averages the replies weighted by
their ``num-examples``. Each virtual client (``partition-id`` -> ``client-<id>`` of the seeded split)
trains it locally exactly as in process (:func:`~fedgrpo.algorithms.fedpetuning.train.train_locally`, same
seeds). The strategy is Flower's; a subclass only counts every ``ArrayRecord``'s bytes each way and
drops (and counts) a reply whose adapter cannot be averaged before Flower's consistency check would
stop the run on it. The run folder is the in-process one
(:class:`~fedgrpo.algorithms.fedpetuning.train.RunBook`).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedgrpo.algorithms.fedpetuning.fedavg import update_problem
from fedgrpo.algorithms.fedpetuning.train import RunBook, policy_with_adapter, train_locally
from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import client_name, derive_seed
from fedgrpo.flower.launch import absolute_paths
from fedgrpo.models.loading import load_tokenizer
from fedgrpo.server.stats import RoundStats
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.flower import simulate, virtual_client_config
from fedgrpo.simulation.partition import FederatedSplit
from fedgrpo.storage.run_folder import check_output_dir, run_folder

log = logging.getLogger(__name__)

WEIGHT = "num-examples"  # Flower's FedAvg default weighted_by_key
ARRAYS, METRICS, CLIENT, CONFIG = "arrays", "metrics", "client", "config"
REPLY_METRICS = {WEIGHT, "steps"}


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole fedpetuning run on Flower's Simulation Engine, one virtual client per client."""
    cfg = absolute_paths(cfg)
    check_output_dir(cfg, resume)
    return simulate(cfg, make_server_app(cfg, resume), make_client_app(cfg.to_yaml()))


class AccountedFedAvg(FedAvg):
    """Flower's FedAvg, with the bytes of every ArrayRecord sent and received counted per client and
    replies that cannot be averaged dropped and counted; the round ends in ``evaluate_fn`` (``end_round``)."""

    def __init__(self, book: RunBook, round_offset: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.book, self.offset = book, round_offset
        self._stats, self._local, self._start = RoundStats(rounds=1), {}, time.perf_counter()
        self._averaged = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._stats, self._local, self._start = RoundStats(rounds=1), {}, time.perf_counter()
        for message in messages:
            node = f"node-{message.metadata.dst_node_id}"
            self._stats.bytes_down_per_client[node] += message.content[self.arrayrecord_key].count_bytes()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_, stats, accepted = server_round + self.offset, self._stats, []
        for reply in replies:
            node = f"node-{reply.metadata.src_node_id}"
            if reply.has_error():
                log.warning("round %d: %s failed: %s", round_, node, reply.error.reason)
                stats.rejected["client_failed"] += 1
                continue
            name, problem = self._read(node, reply)
            if problem is None:
                accepted.append(reply)
            else:
                log.warning("round %d: dropped the reply of %s: %s", round_, name, problem)
                stats.rejected["bad_adapter"] += 1
        self._averaged = len(accepted)
        return super().aggregate_train(server_round, accepted)  # Flower's own weighted average

    def _read(self, node: str, reply: Message) -> tuple[str, str | None]:
        """The client's name and why its reply cannot be averaged (None: it can). Never raises."""
        content, name = reply.content, node
        try:
            if CLIENT in content and isinstance(content[CLIENT], ConfigRecord):
                name = str(content[CLIENT].get("name", node))
            self._stats.bytes_down_per_client[name] += self._stats.bytes_down_per_client.pop(node, 0)
            if set(content.keys()) != {ARRAYS, METRICS, CLIENT}:
                return name, f"records {sorted(content.keys())}, expected {sorted([ARRAYS, METRICS, CLIENT])}"
            arrays, metrics = content[ARRAYS], content[METRICS]
            if not isinstance(arrays, ArrayRecord) or not isinstance(metrics, MetricRecord):
                return name, "the arrays or metrics record has the wrong type"
            self._stats.bytes_up_per_client[name] += arrays.count_bytes()
            if set(metrics.keys()) != REPLY_METRICS:
                return name, f"metrics {sorted(metrics.keys())}, expected {sorted(REPLY_METRICS)}"
            weight = metrics[WEIGHT]
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
                return name, f"{WEIGHT} must be a positive number, got {weight!r}"
            update = {k: torch.from_numpy(v.numpy()) for k, v in arrays.items()}
            problem = update_problem(update, self.book.global_state)
            if problem is not None:
                return name, problem
            summary = json.loads(str(content[CLIENT].get("summary", "{}")))
            self._local[name] = {**(summary if isinstance(summary, dict) else {}), "examples": weight}
        except Exception as err:  # a malformed reply is that client's problem, never the server's
            return name, f"malformed reply: {type(err).__name__}: {err}"
        return name, None

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's ``evaluate_fn``: after each round, the averaged adapter into the run book."""
        if server_round == 0:
            return None  # called once before the first round, with the initial adapter
        averaged = arrays.to_torch_state_dict() if self._averaged else None
        seconds = time.perf_counter() - self._start
        self.book.end_round(server_round + self.offset, self._stats, averaged, self._local, seconds)
        return None


def make_server_app(cfg: FedGRPOConfig, resume: bool = False) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        split = build_data(cfg)
        with run_folder(cfg, resume):
            book = RunBook(cfg, split, resume)
            offset, fp = book.first_round - 1, cfg.fedpetuning
            n = min(cfg.flower.num_supernodes or cfg.data.num_clients, cfg.data.num_clients)
            if fp.rounds > offset:
                random.seed(derive_seed(cfg.seed, "flower-fedavg-sample"))  # Flower samples with `random`
                strategy = AccountedFedAvg(
                    book,
                    offset,
                    fraction_train=fp.clients_per_round,
                    fraction_evaluate=0.0,
                    min_train_nodes=1,
                    min_available_nodes=n,
                )
                strategy.start(
                    grid,
                    ArrayRecord.from_torch_state_dict(book.global_state),
                    num_rounds=fp.rounds - offset,
                    timeout=cfg.flower.competence_timeout_s,
                    train_config=ConfigRecord({"round-offset": offset}),
                    evaluate_fn=strategy.end_round,
                )
            book.finish(
                {"kind": "flower-simulation", "strategy": "flwr.serverapp.strategy.FedAvg", "nodes": n}
            )

    return app


@functools.cache
def _client_side(config_text: str) -> tuple[FedGRPOConfig, FederatedSplit, Any, Any]:
    """Once per Ray worker: the config, the seeded split, and one policy with an adapter to train."""
    cfg = virtual_client_config(config_text)
    return cfg, build_data(cfg), policy_with_adapter(cfg), load_tokenizer(cfg.model.name_or_path)


def make_client_app(config_text: str) -> ClientApp:
    """Each virtual client trains the server's adapter on its own examples and sends it back."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        cfg, split, model, tokenizer = _client_side(config_text)
        name = client_name(int(context.node_config["partition-id"]))
        examples = split.clients.get(name) or []
        if not examples:
            raise ValueError(f"{name} holds no examples to train on")
        config = message.content[CONFIG]
        round_ = int(config["server-round"]) + int(config["round-offset"])
        state = message.content[ARRAYS].to_torch_state_dict()
        update, summary = train_locally(cfg, model, tokenizer, name, examples, state, round_)
        reply = RecordDict(
            {
                ARRAYS: ArrayRecord.from_torch_state_dict(update),
                METRICS: MetricRecord({WEIGHT: len(examples), "steps": summary["steps"]}),
                CLIENT: ConfigRecord({"name": name, "summary": json.dumps(summary)}),
            }
        )
        return Message(reply, reply_to=message)

    return app
