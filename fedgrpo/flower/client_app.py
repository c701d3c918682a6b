"""The FedGRPO ClientApp: one organisation's client, answering the server's queries on Flower.

Message types: ``query.profile`` (join handshake), ``query.competence`` (expert selection's one-off
competence queries), ``query.reward`` (one batched request per client per generation batch).

The run config carries the experiment's config (``config``: a preset, a YAML file or YAML text;
``overrides``; ``resume``). Where a ClientApp's client comes from:

* Deployment Engine: the SuperNode's node config names the organisation's own data file
  (``data-file``, written by ``fedgrpo export-client-data``), optionally its ``name``, its base
  ``model`` and its expert ``adapter`` folder. Nothing else about other clients is known to it.
* Simulation Engine: the virtual node's ``partition-id`` picks ``client-<id>`` from the seeded split;
  all virtual clients in one Ray worker share one loaded base model (their adapters sit on it).

Clients are cached per process across messages. Bad input (oversized content, wrong records or types,
a message of the wrong kind) is answered with an error reply, counted and logged; it never raises.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedgrpo.client import Client
from fedgrpo.client.experts import load_experts
from fedgrpo.config import FedGRPOConfig, load_config_text
from fedgrpo.data import client_name, read_client_data
from fedgrpo.flower.codec import PROFILE, content_bytes, from_records, reply_records
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.protocol import ErrorReply, ProtocolError, encode
from fedgrpo.run.assemble import build_data
from fedgrpo.run.clients import build_clients, make_client

log = logging.getLogger(__name__)

REJECTED: Counter = Counter()  # this process's rejected requests, by reason (reported in every reply)
_CLIENTS: dict[tuple[str, str], Client] = {}


def config_from_run_config(run_config: dict[str, Any]) -> FedGRPOConfig:
    """The experiment's config from a Flower run config (``config`` and ``overrides``)."""
    return _config(str(run_config.get("config") or "smoke"), str(run_config.get("overrides", "")))


@functools.cache
def _config(text: str, overrides: str) -> FedGRPOConfig:
    """Parsed once per process: a ClientApp sees the same run config on every message."""
    return load_config_text(text, overrides.split())


@functools.cache
def _simulated_clients(cfg_yaml: str) -> dict[str, Client]:
    """Every client of the seeded split, built once per process: one base model, shared."""
    cfg = load_config_text(cfg_yaml)
    return {c.name: c for c in build_clients(cfg, build_data(cfg))}


@functools.cache
def _base_model(name: str) -> tuple[Any, Any]:
    model = load_policy(name)
    model.requires_grad_(False)
    return model, load_tokenizer(name)


def _deployed_client(cfg: FedGRPOConfig, node: dict[str, Any]) -> Client:
    """The organisation's own client, from the files its SuperNode's node config points at."""
    path = Path(str(node["data-file"])).expanduser()
    name = str(node.get("name") or path.stem)
    examples = read_client_data(path)
    model_name = node.get("model") or cfg.clients.model
    model = None
    if model_name:
        base, tokenizer = _base_model(str(model_name))
        adapter = node.get("adapter")
        if adapter:
            model = (load_experts(base, {name: Path(str(adapter)).expanduser()}), tokenizer, name)
        else:
            model = (base, tokenizer, None)
    return make_client(cfg, name, examples, model)


def client_for(cfg: FedGRPOConfig, node: dict[str, Any]) -> Client:
    """This node's client (cached per process); raises LookupError when the node config names none."""
    if "data-file" in node:
        key = (cfg.to_yaml(), f"file:{node['data-file']}:{node.get('name', '')}")
        if key not in _CLIENTS:
            _CLIENTS[key] = _deployed_client(cfg, node)
        return _CLIENTS[key]
    if "partition-id" in node:
        name = client_name(int(node["partition-id"]))
        clients = _simulated_clients(cfg.to_yaml())
        if name not in clients:
            raise LookupError(f"virtual node {node['partition-id']} has no client: {name} is not available")
        return clients[name]
    raise LookupError("node config names no client: give data-file=... (see docs/deployment.md)")


def _reject(reason: str, detail: str) -> None:
    REJECTED[reason] += 1
    log.warning("client app rejected a request (%s): %s", reason, detail)


def _error(message: Message, who: str, request_id: str, error: str) -> Message:
    reply = ErrorReply(request_id, who, error)
    return Message(reply_records(reply, 0, sum(REJECTED.values())), reply_to=message)


def make_client_app(config_text: str | None = None) -> ClientApp:
    """The ClientApp; ``config_text`` fixes the config (Python-launched simulation), else the run config."""
    app = ClientApp()

    def cfg_of(context: Context) -> FedGRPOConfig:
        if config_text is not None:
            return _config(config_text, "")
        return config_from_run_config(dict(context.run_config))

    @app.query("profile")
    def profile(message: Message, context: Context) -> Message:
        try:
            client = client_for(cfg_of(context), dict(context.node_config))
            record = ConfigRecord(client.profile())
        except Exception as err:  # an unusable node says why instead of crashing its SuperNode
            log.warning("this node cannot serve as a client: %s", err)
            why = f"{type(err).__name__}: {err}"[:500]
            record = ConfigRecord({"name": f"node-{context.node_id}", "error": why})
        return Message(RecordDict({PROFILE: record}), reply_to=message)

    def serve(message: Message, context: Context, kind: str) -> Message:
        try:
            cfg = cfg_of(context)
            size = content_bytes(message.content)
            if size > cfg.flower.max_message_bytes:
                raise ProtocolError(f"request of about {size} bytes exceeds {cfg.flower.max_message_bytes}")
            request = from_records(message.content)
            if request.kind != kind:
                raise ProtocolError(f"a {message.metadata.message_type} message carries a {request.kind!r}")
            client = client_for(cfg, dict(context.node_config))
        except ProtocolError as err:
            _reject("malformed_request", str(err))
            return _error(message, "?", "?", f"malformed request: {err}")
        except Exception as err:
            _reject("unavailable", str(err))
            return _error(message, "?", "?", f"client unavailable: {type(err).__name__}: {err}")
        try:
            reply = client.respond(request)
        except Exception as err:  # a failing evaluator must not take the ClientApp down
            log.exception("client %s failed on %s", client.name, request.request_id)
            return _error(message, client.name, request.request_id, f"{type(err).__name__}: {err}")
        records = reply_records(reply, len(encode(request)), sum(REJECTED.values()))
        return Message(records, reply_to=message)

    @app.query("reward")
    def reward(message: Message, context: Context) -> Message:
        return serve(message, context, "reward")

    @app.query("competence")
    def competence(message: Message, context: Context) -> Message:
        return serve(message, context, "competence")

    return app


# What `flwr run` loads (see the app folder's pyproject.toml): the config comes from the run config.
app = make_client_app()
