"""The FedGRPO ClientApp: one organisation's client, answering the server's queries on Flower.

Message types: ``query.profile`` (join handshake), ``query.competence`` (expert selection's one-off
competence queries), ``query.reward`` (one batched request per client per generation batch).

The run config carries the experiment's config (``config``: a preset, a YAML file or YAML text;
``overrides``; ``resume``). Where a ClientApp's client comes from:

* Deployment Engine: the SuperNode's node config (``--node-config 'key="value" ...'``) describes the
  organisation's own client; nothing about other clients is known to it:

  - ``data-file`` (required): its labelled examples as JSON lines (format: ``fedgrpo.data.files``).
  - ``name``: optional, the name it claims. The server knows each client by the name registered for
    its SuperNode key and refuses a node whose claim differs; the client answers under that name.
  - ``model``: a client base model loaded in this process (embedded name, hub id or folder);
    ``adapter``: its expert LoRA folder on that base. Without both, the run's ``clients.model``.
  - ``endpoint``: instead of ``model``/``adapter``, the base URL of an OpenAI-compatible server the
    organisation runs with its model (``transformers serve``, vLLM), e.g.
    ``http://127.0.0.1:8000/v1``; ``endpoint-model``: the model name that server expects (for
    ``transformers serve FOLDER``, FOLDER); ``endpoint-key-env``: the name of an environment
    variable holding its API key (never the key itself: node config is not secret).
  - Neither ``endpoint`` nor ``model``/``adapter``: the run's ``clients.endpoint`` or
    ``clients.model``, if any; with none, the client scores only questions it holds.

  An endpoint client is scored with the run's ``clients.*`` settings and ``seed``, answer-based
  evaluation first. If its endpoint is down, model-scored items of a
  reward request abstain (None, method "none"; counted as ``model_unavailable`` in the reply's
  ``rejected.*`` counts) and a competence query gets an error reply naming the endpoint's error.
* Simulation Engine: the same app with the simulation's clients (:mod:`fedgrpo.simulation.flower`):
  the virtual node's ``partition-id`` picks ``client-<id>`` from the seeded split.

An answer-only or endpoint-served ClientApp imports neither torch nor transformers (nor TRL: the
config is read without TRL's checks, which the server made). Clients are cached per process across
messages. Bad input (oversized content, wrong records or types, a message of the wrong kind) is
answered with an error reply, counted and logged; it never raises. Each reply counts only what its
own message was refused for: a deployed ClientApp is a new process per message, so the server adds
the counts up (:mod:`fedgrpo.flower.transport`). What an error tells the server names the kind of
fault, never a value from the data file nor a local path (:mod:`fedgrpo.flower.redact`); the
organisation's own log keeps the detail. Every reply a deployed node sends is first appended to its
transparency log (:mod:`fedgrpo.flower.reply_log`); one that cannot be logged is not sent.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from pydantic import ValidationError

from fedgrpo.client import Client, ClientModel
from fedgrpo.client.factory import endpoint_model, in_process_model, make_client, private_release
from fedgrpo.client.privacy import PrivateRelease
from fedgrpo.client.private_training import training_privacy
from fedgrpo.config import ClientPrivacy, FedGRPOConfig, config_from_mapping, load_config_text
from fedgrpo.data import read_client_data
from fedgrpo.flower import reply_log
from fedgrpo.flower.codec import PROFILE, content_bytes, read_payload, reply_records
from fedgrpo.flower.redact import public_error
from fedgrpo.protocol import ErrorReply, ProtocolError, VersionMismatch, decode, refusal
from fedgrpo.protocol import Message as ProtocolMessage

# Not imported here: fedgrpo.models.loading and fedgrpo.client.experts. They need torch and
# transformers, an optional heavy dependency that only in-process client models use (not an import
# cycle); the functions that need them import them.

log = logging.getLogger(__name__)

_CLIENTS: dict[tuple[str, str], Client] = {}


def config_from_run_config(run_config: dict[str, Any]) -> FedGRPOConfig:
    """The experiment's config from a Flower run config (``config`` and ``overrides``)."""
    return _config(str(run_config.get("config") or "smoke"), str(run_config.get("overrides", "")))


@functools.cache
def _config(text: str, overrides: str) -> FedGRPOConfig:
    """Parsed once per process: a ClientApp sees the same run config on every message. Without
    TRL's checks: the client trains nothing, and the server checked ``grpo`` before submitting.

    In a deployment only the settings a client uses are read (:func:`client_view`): the server's own
    paths (its files, its CA certificate, its model folder) do not exist on an organisation's machine.
    """
    cfg = load_config_text(text, overrides.split(), trl_checks=False) if "\n" not in text else None
    if cfg is None:
        data = yaml.safe_load(text)
        if isinstance(data, dict) and (data.get("federation") or {}).get("transport") == "flower-deployment":
            data = client_view(data)
        cfg = config_from_mapping(data, overrides.split(), trl_checks=False)
    return cfg


# Not clients.weights: a deployed organisation's ClientApp process lives for one message, and packing
# its model's weights in fp16 (about 1 s) would cost more than a message's generation saves.
CLIENT_KEYS = {
    "clients": ("evaluation", "samples", "max_new_tokens", "temperature", "direct_answer"),
    "federation": ("per_item_methods",),
    "flower": ("max_message_bytes", "reward_timeout_s", "competence_timeout_s"),
    "model": ("worked_example",),
}


def client_view(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a deployment's run config an organisation's client uses: how to score (sampling
    settings, seed), message limits and timeouts; nothing of the server's paths."""
    view: dict[str, Any] = {"seed": data.get("seed", 0), "name": data.get("name", "run")}
    for section, keys in CLIENT_KEYS.items():
        given = data.get(section) or {}
        view[section] = {k: given[k] for k in keys if k in given}
    return view


@functools.cache
def _base_model(name: str) -> tuple[Any, Any]:
    from fedgrpo.models.loading import load_policy, load_tokenizer  # heavy: see the note

    model = load_policy(name)
    model.requires_grad_(False)
    return model, load_tokenizer(name)


def _in_process_model(cfg: FedGRPOConfig, name: str, base_name: str, adapter: str | None) -> ClientModel:
    base, tokenizer = _base_model(base_name)
    if not adapter:
        return in_process_model(cfg, base, tokenizer, None)
    from fedgrpo.client.experts import load_experts  # heavy: see the note on the imports

    return in_process_model(cfg, load_experts(base, {name: Path(adapter).expanduser()}), tokenizer, name)


def _api_key(node: dict[str, Any]) -> str | None:
    """The endpoint's API key from the environment variable the node config names, if it names one."""
    var = node.get("endpoint-key-env")
    if not var:
        return None
    key = os.environ.get(str(var))
    if not key:
        raise ValueError(f"node config endpoint-key-env={var!r}: that environment variable is not set")
    return key


def _node_model(cfg: FedGRPOConfig, name: str, node: dict[str, Any]) -> ClientModel | None:
    """The client's model: the node config's own choice, else the run's ``clients.*``, else none."""
    url, base, adapter = node.get("endpoint"), node.get("model"), node.get("adapter")
    if url:
        if base or adapter:
            raise ValueError("node config: endpoint and model/adapter are alternatives; give one")
        if not node.get("endpoint-model"):
            raise ValueError("node config endpoint needs endpoint-model: the model name the server expects")
        return endpoint_model(cfg, str(url), str(node["endpoint-model"]), _api_key(node))
    cs = cfg.clients
    if not (base or adapter) and cs.endpoint is not None:
        assert cs.endpoint_model is not None  # the config requires it with an endpoint
        return endpoint_model(cfg, cs.endpoint, cs.endpoint_model)
    base = base or cs.model
    if not base:
        if adapter:
            raise ValueError("node config adapter needs a base model: give model=... (or clients.model)")
        return None
    return _in_process_model(cfg, name, str(base), str(adapter) if adapter else None)


PRIVACY_KEYS = {  # node config key -> clients.privacy field: the organisation's own decision
    "privacy-epsilon": "epsilon",
    "privacy-budget-epsilon": "budget_epsilon",
    "privacy-budget-delta": "budget_delta",
    "privacy-continuous": "continuous_mechanism",
    "privacy-delta-per-value": "delta_per_value",
    "privacy-max-answers": "max_answers_per_question",
}


def node_privacy(cfg: FedGRPOConfig, node: dict[str, Any], data_file: Path) -> PrivateRelease | None:
    """The organisation's release layer from its node config: on when ``privacy-epsilon`` is given.

    Its cache and ledger persist in ``privacy-state`` (default: next to its data file), since a
    ClientApp may be a new process per message. Noise comes from the operating system, never a seed.
    """
    given = {field: node[key] for key, field in PRIVACY_KEYS.items() if key in node}
    if str(given.get("budget_epsilon", "")).lower() == "none":
        given["budget_epsilon"] = None  # no cap: the spend is still accounted and reported
    if "epsilon" not in given:
        if given:
            raise ValueError(
                f"node config {sorted(k for k in PRIVACY_KEYS if k in node)} needs privacy-epsilon"
            )
        return None
    try:
        settings = ClientPrivacy.model_validate({"enabled": True, **given})
    except ValidationError as err:
        fields = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
        keys = [k for k, f in PRIVACY_KEYS.items() if f in fields] or sorted(PRIVACY_KEYS)
        raise ValueError(f"node config {', '.join(keys)}: {err.errors()[0]['msg']}") from err
    state = node.get("privacy-state") or data_file.with_name(data_file.name + ".privacy.json")
    adapter = node.get("adapter")  # a DP-SGD expert's cost is composed into every example's ledger
    training = training_privacy(Path(adapter).expanduser()) if adapter else None
    return private_release(cfg, settings, data_file.name, str(state), seeded=False, training=training)


def _deployed_client(cfg: FedGRPOConfig, node: dict[str, Any]) -> Client:
    """The organisation's own client, from the files (and endpoint) its SuperNode's node config names."""
    path = Path(str(node["data-file"])).expanduser()
    name = str(node.get("name") or "")  # the server knows it by its registered name; a claim is checked
    privacy = node_privacy(cfg, node, path)  # checked before any data or model loads
    examples = read_client_data(path)
    return make_client(cfg, name, examples, _node_model(cfg, name or "expert", node), privacy=privacy)


def client_for(cfg: FedGRPOConfig, node: dict[str, Any]) -> Client:
    """This node's client (cached per process); raises LookupError when the node config names none."""
    if "data-file" in node:
        key = (cfg.to_yaml(), repr(sorted(node.items())))  # the whole node config: file, model, endpoint
        if key not in _CLIENTS:
            _CLIENTS[key] = _deployed_client(cfg, node)
        return _CLIENTS[key]
    raise LookupError("node config names no client: give data-file=... (see docs/deployment.md)")


# how a ClientApp finds the client that serves a node: (config, node config) -> client
FindClient = Callable[[FedGRPOConfig, dict[str, Any]], Client]


def _rejected(message: Message, reply: ProtocolMessage | bytes, reason: str, detail: str) -> Message:
    """The reply to a request this ClientApp refused, carrying that one refusal's count."""
    log.warning("client app rejected a request (%s): %s", reason, detail)
    return Message(reply_records(reply, 0, {reason: 1}), reply_to=message)


def _spent(payload: bytes) -> Any:
    """The privacy spent that a reply's payload reports (none in an error or an older peer's refusal)."""
    try:
        return getattr(decode(payload, len(payload) + 1), "privacy_spent", None)
    except ProtocolError:
        return None


def _logged(
    context: Context, run: str, message: Message, reply: Message, request: ProtocolMessage | None = None
) -> Message:
    """``reply`` to ``message``, once the organisation's transparency log (:mod:`.reply_log`) holds
    it; if the log cannot be written, a refusal that carries nothing of the organisation's."""
    path = reply_log.log_path(dict(context.node_config))
    if path is None:
        return reply
    is_profile = PROFILE in reply.content.config_records
    try:
        if is_profile:
            sent: bytes | dict = dict(reply.content.config_records[PROFILE])
            spent = None
        else:
            sent = read_payload(reply.content)
            spent = _spent(sent)
        reply_log.append(path, run, context.run_id, reply_log.asked(request), sent, spent)
        return reply
    except OSError as err:
        log.error("reply not sent: the transparency log %s cannot be written: %s", path, err)
        why = "client unavailable: its reply log cannot be written"
        if is_profile:
            record = ConfigRecord({"name": f"node-{context.node_id}", "error": why})
            return Message(RecordDict({PROFILE: record}), reply_to=message)
        return Message(reply_records(ErrorReply("?", "?", why), 0, {"unavailable": 1}), reply_to=message)


def make_client_app(config_text: str | None = None, find_client: FindClient = client_for) -> ClientApp:
    """The ClientApp; ``config_text`` fixes the config (Python-launched simulation), else the run config;
    ``find_client``: a node's client (a simulation's: :func:`fedgrpo.simulation.flower.virtual_client`)."""
    app = ClientApp()

    def cfg_of(context: Context) -> FedGRPOConfig:
        if config_text is not None:
            return _config(config_text, "")
        return config_from_run_config(dict(context.run_config))

    @app.query("profile")
    def profile(message: Message, context: Context) -> Message:
        node = dict(context.node_config)
        try:
            client = find_client(cfg_of(context), node)
            record = ConfigRecord(client.profile())
        except Exception as err:  # an unusable node says why instead of crashing its SuperNode
            log.warning("this node cannot serve as a client: %s", err)
            why = public_error(err, node)[:500]
            record = ConfigRecord({"name": f"node-{context.node_id}", "error": why})
        return _logged(
            context, run_name(context), message, Message(RecordDict({PROFILE: record}), reply_to=message)
        )

    def run_name(context: Context) -> str:
        try:
            return cfg_of(context).name
        except Exception:  # the config's own error is the reply's; the log still records what left
            return "?"

    def serve(message: Message, context: Context, kind: str) -> tuple[Message, ProtocolMessage | None]:
        node = dict(context.node_config)
        request: ProtocolMessage | None = None
        try:
            cfg = cfg_of(context)
            size = content_bytes(message.content)
            if size > cfg.flower.max_message_bytes:
                raise ProtocolError(f"request of about {size} bytes exceeds {cfg.flower.max_message_bytes}")
            payload = read_payload(message.content)
            request = decode(payload, cfg.flower.max_message_bytes)
            if request.kind != kind:
                raise ProtocolError(f"a {message.metadata.message_type} message carries a {request.kind!r}")
            client = find_client(cfg, node)
        except VersionMismatch as err:  # answered in the server's own version: it shows why
            return _rejected(message, refusal(err, "?"), "malformed_request", str(err)), None
        except ProtocolError as err:
            error = ErrorReply("?", "?", f"malformed request: {err}")
            return _rejected(message, error, "malformed_request", str(err)), None
        except Exception as err:
            error = ErrorReply("?", "?", f"client unavailable: {public_error(err, node)}")
            return _rejected(message, error, "unavailable", str(err)), request
        unavailable = client.model_unavailable
        try:
            reply = client.respond(request)
        except Exception as err:  # a failing evaluator must not take the ClientApp down
            log.exception("client %s failed on %s", client.name, request.request_id)
            error = ErrorReply(request.request_id, client.name, public_error(err, node))
            return Message(reply_records(error, 0), reply_to=message), request
        # An unavailable client model (endpoint down) abstained or refused; the client logged why.
        rejected = {"model_unavailable": client.model_unavailable - unavailable}
        return Message(reply_records(reply, len(payload), rejected), reply_to=message), request

    @app.query("reward")
    def reward(message: Message, context: Context) -> Message:
        return _logged(context, run_name(context), message, *serve(message, context, "reward"))

    @app.query("competence")
    def competence(message: Message, context: Context) -> Message:
        return _logged(context, run_name(context), message, *serve(message, context, "competence"))

    return app


# What `flwr run` loads (see the app folder's pyproject.toml): the config comes from the run config.
app = make_client_app()
