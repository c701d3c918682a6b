"""Clients whose model sits behind an OpenAI-compatible endpoint: through ``Client.respond``, the
simulated clients of a run (``clients.endpoint``), the deployed ClientApp's node config (``endpoint``)
and a down endpoint.

Loopback stub servers (tests/helpers.py) give exact assertions; one smoke test goes through a real
``transformers serve`` (the ``served`` fixture).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.client import (
    AnswerEvaluator,
    Client,
    DualEvaluator,
    EndpointEvaluator,
    EndpointModel,
    ScoringSettings,
)
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import Example, derive_seed, make_qid, normalise_question, write_client_data
from fedgrpo.protocol import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    Message,
    RewardItem,
    RewardReply,
    RewardRequest,
)
from tests.helpers import Reply, chat_reply, delivered, free_port, json_reply, stub_server

HELD = ("What is 3 + 4?", "7")  # the client holds this one
DOZEN = "How many eggs are in a dozen?"  # and not these: its endpoint model answers them
TRIPLE = "How many sides has a triangle?"
ANSWERS = {DOZEN: "<answer>12</answer>", TRIPLE: "so <answer>3</answer>"}


def _expert(_method: str, _path: str, body: dict[str, Any] | None) -> Reply:
    """A stub expert that knows DOZEN and TRIPLE and nothing else (no answer block: cannot judge)."""
    question = body["messages"][-1]["content"] if body else ""
    return chat_reply(next((a for q, a in ANSWERS.items() if q in question), "I do not know."))


def _asked(seen: list) -> list[str]:
    """The questions a stub was asked, in order ("other" for any but HELD, DOZEN and TRIPLE)."""
    asked = []
    for _, _, body, _ in seen:
        content = body["messages"][-1]["content"]
        asked.append(next((q for q in (*ANSWERS, HELD[0]) if q in content), "other"))
    return asked


def _examples() -> list[Example]:
    return [Example(make_qid("sums", HELD[0]), "sums", HELD[0], HELD[1])]


def _reward_request() -> RewardRequest:
    return RewardRequest(
        "r1",
        "org",
        [
            RewardItem("held", HELD[0], ["<answer>7</answer>", "<answer>8</answer>"]),
            RewardItem("dozen", DOZEN, ["<answer>12</answer>", "twelve", "<answer>13</answer>"]),
            RewardItem("triple", TRIPLE, ["<answer>3</answer>"]),
        ],
    )


COMPETENCE = CompetenceRequest(
    "c1",
    "org",
    [CompetenceItem("a", DOZEN, "12.0"), CompetenceItem("b", TRIPLE, "4"), CompetenceItem("c", "Why?", "1")],
)


def _endpoint_client(url: str, **kwargs: Any) -> Client:
    model = EndpointEvaluator(
        EndpointModel(url, "org/expert", max_retries=0), ScoringSettings(samples=1), **kwargs
    )
    return Client("org", _examples(), DualEvaluator(AnswerEvaluator(_examples()), model))


# -- a Client with an endpoint model -----------------------------------------------------------------


def test_client_scores_and_answers_competence_through_its_endpoint() -> None:
    with stub_server(_expert) as (url, seen):
        client = _endpoint_client(url)
        assert client.profile()["evaluates"] == ["answer", "model"]
        reply = client.respond(_reward_request())
        assert isinstance(reply, RewardReply)
        held, dozen, triple = reply.items
        assert reply.methods == {"answer": 1, "model": 2, "none": 0}
        assert held.rewards == pytest.approx([1.0, 0.0])
        assert dozen.rewards == pytest.approx([1.0, 0.0, 0.0]) and triple.rewards == pytest.approx([1.0])
        assert _asked(seen) == [DOZEN, TRIPLE]  # the held question never reaches the model
        # Competence: "12.0" matches the model's 12; "4" is not its 3; "Why?" gets no answer at all.
        assert client.respond(COMPETENCE) == CompetenceReply("c1", "org", [1, 0, 0])
        assert _asked(seen) == [DOZEN, TRIPLE, "other"]  # DOZEN's and TRIPLE's references were cached
    assert client.model_unavailable == 0


def test_a_failing_endpoint_abstains_on_model_items_and_refuses_competence() -> None:
    with stub_server(lambda *_: json_reply({"error": "model not loaded"}, 503)) as (url, seen):
        client = _endpoint_client(url)
        reply = client.respond(_reward_request())
        assert isinstance(reply, RewardReply)
        held, dozen, triple = reply.items
        assert reply.methods == {"answer": 1, "model": 0, "none": 2}
        assert held.rewards == pytest.approx([1.0, 0.0])
        assert (dozen.rewards, triple.rewards) == ([None, None, None], [None])
        assert len(seen) == 1  # the second model item did not try again (cooldown)
        assert client.model_unavailable == 1
        refused = client.respond(COMPETENCE)
    assert isinstance(refused, ErrorReply)
    assert (
        "client model unavailable" in refused.error and f"{url}/chat/completions: HTTP 503" in refused.error
    )
    assert client.model_unavailable == 2


# -- simulated clients of a run: clients.endpoint ----------------------------------------------------


def test_clients_endpoint_config_is_validated() -> None:
    base = ["clients.endpoint=http://127.0.0.1:8000/v1"]
    for extra, message in [
        (["clients.endpoint=ftp://host/v1", "clients.endpoint_model=m"], "http:// or https://"),
        ([], "needs clients.endpoint_model"),
        (["clients.endpoint_model=m", "clients.model=tiny-random"], "alternatives"),
        (["clients.endpoint_model=m", "clients.expert.method=sft"], "serves its own expert"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config("smoke", [*base, *extra])
    with pytest.raises(ConfigError, match="endpoint_model needs clients.endpoint"):
        load_config("smoke", ["clients.endpoint_model=m"])
    # An endpoint is a client model: enough for the confidence graph and for no-ground-truth.
    cfg = load_config(
        "graph-smoke",
        [*base, "clients.model=null", "clients.endpoint_model=m", "data.setting=no-ground-truth"],
    )
    assert cfg.clients.has_model and cfg.clients.endpoint == base[0].split("=", 1)[1]


def test_simulated_clients_score_through_one_shared_endpoint() -> None:
    """A run's clients behind the in-process transport: model-scored rewards and competence bits
    through one endpoint (one evaluator, so one sampling per question for all clients)."""
    from fedgrpo.simulation.clients import build_clients
    from fedgrpo.simulation.data import build_data
    from fedgrpo.transport import InProcessTransport

    with stub_server(_expert) as (url, seen):
        cfg = load_config(
            "smoke", [f"clients.endpoint={url}", "clients.endpoint_model=org/expert", "clients.samples=1"]
        )
        clients = build_clients(cfg, build_data(cfg))
        assert all(c.profile()["evaluates"] == ["answer", "model"] for c in clients)
        assert len({id(c._evaluator.model) for c in clients}) == 1  # type: ignore[attr-defined]
        transport = InProcessTransport(clients)
        request = RewardRequest("r1", "?", [RewardItem("dozen", DOZEN, ["<answer>12</answer>", "12"])])
        deliveries = transport.exchange({c.name: request for c in clients})
        for delivery in deliveries.values():
            assert isinstance(delivery.reply, RewardReply)
            assert delivery.reply.methods == {"answer": 0, "model": 1, "none": 0}
            assert delivery.reply.items[0].rewards == pytest.approx([1.0, 0.0])
        bits = transport.exchange({clients[0].name: COMPETENCE})[clients[0].name].reply
        assert isinstance(bits, CompetenceReply) and bits.bits == [1, 0, 0]
    body = seen[0][2]
    assert body["model"] == "org/expert" and body["max_tokens"] == cfg.clients.max_new_tokens
    assert body["seed"] == derive_seed("model-evaluation", cfg.seed, normalise_question(DOZEN))
    assert _asked(seen) == [DOZEN, TRIPLE, "other"]  # DOZEN once for all clients, then competence


# -- the deployed ClientApp: endpoint node config ----------------------------------------------------


@pytest.fixture()
def app() -> Iterator[Any]:
    """The ClientApp with the smoke config, one sample per question; called as Flower calls it."""
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity

    from fedgrpo.flower import client_app

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    cfg = load_config("smoke", ["clients.samples=1", "clients.max_new_tokens=2"])
    yield client_app.make_client_app(cfg.to_yaml())


def _call(app: Any, message: Message | None, kind: str, node: dict[str, Any]) -> tuple[Any, Any]:
    """One query to the ClientApp: (the decoded reply, the reply's stats)."""
    from flwr.app import Context, RecordDict

    from fedgrpo.flower.codec import from_records, read_stats, to_records

    content = RecordDict() if message is None else to_records(message)
    request = delivered(content, kind)
    context = Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={})
    reply = app(message=request, context=context)
    if kind == "query.profile":
        return dict(reply.content["profile"]), None
    asked = "" if message is None else message.client  # the name is the channel's: not in the bytes
    return from_records(reply.content, client=asked), read_stats(reply.content)


def _data_file(tmp_path: Path) -> str:
    path = tmp_path / "org.jsonl"
    write_client_data(_examples(), path)
    return str(path)


def test_client_app_endpoint_node_config_scores_and_answers(app, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEDGRPO_TEST_ENDPOINT_KEY", "s3cret")
    with stub_server(_expert) as (url, seen):
        node = {
            "data-file": _data_file(tmp_path),
            "name": "org",
            "endpoint": url,
            "endpoint-model": "org/expert",
            "endpoint-key-env": "FEDGRPO_TEST_ENDPOINT_KEY",
        }
        profile, _ = _call(app, None, "query.profile", node)
        assert profile["name"] == "org" and profile["evaluates"] == ["answer", "model"]
        reply, stats = _call(app, _reward_request(), "query.reward", node)
        assert isinstance(reply, RewardReply)
        assert reply.methods == {"answer": 1, "model": 2, "none": 0}
        assert reply.items[1].rewards == pytest.approx([1.0, 0.0, 0.0])
        bits, _ = _call(app, COMPETENCE, "query.competence", node)
        assert bits == CompetenceReply("c1", "org", [1, 0, 0])
    assert _asked(seen) == [DOZEN, TRIPLE, "other"]  # the client (and its cache) lives across messages
    for _, path, body, headers in seen:
        assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer s3cret"
        assert body["model"] == "org/expert" and body["max_tokens"] == 2 and body["temperature"] == 0.0


def test_client_app_with_a_down_endpoint_abstains_counts_and_refuses_competence(app, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    node = {"data-file": _data_file(tmp_path), "endpoint": url, "endpoint-model": "m"}
    profile, _ = _call(app, None, "query.profile", node)
    assert profile["evaluates"] == ["answer", "model"]  # the client serves; nothing is contacted yet
    reply, stats = _call(app, _reward_request(), "query.reward", node)
    assert isinstance(reply, RewardReply)
    assert reply.methods == {"answer": 1, "model": 0, "none": 2}
    assert reply.items[0].rewards == pytest.approx([1.0, 0.0]) and reply.items[1].rewards == [None] * 3
    assert stats["rejected"] == {"model_unavailable": 1}  # the server sees this message's count
    refused, stats = _call(app, COMPETENCE, "query.competence", node)
    assert isinstance(refused, ErrorReply) and refused.client == "org"
    assert "client model unavailable" in refused.error and f"{url}/chat/completions" in refused.error
    assert stats["rejected"] == {"model_unavailable": 1}  # its own, not a running total


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"endpoint": "http://127.0.0.1:9/v1"}, "needs endpoint-model"),
        (
            {"endpoint": "http://127.0.0.1:9/v1", "endpoint-model": "m", "model": "tiny-random"},
            "alternatives",
        ),
        ({"endpoint": "127.0.0.1:9", "endpoint-model": "m"}, "http:// or https://"),
        (
            {
                "endpoint": "http://127.0.0.1:9/v1",
                "endpoint-model": "m",
                "endpoint-key-env": "FEDGRPO_NO_SUCH",
            },
            "FEDGRPO_NO_SUCH",
        ),
        ({"adapter": "/nowhere"}, "adapter needs a base model"),
    ],
    ids=["no-model-name", "endpoint-and-model", "bad-url", "key-env-unset", "adapter-alone"],
)
def test_client_app_bad_endpoint_node_config_says_why(app, tmp_path, extra, error) -> None:
    profile, _ = _call(app, None, "query.profile", {"data-file": _data_file(tmp_path), **extra})
    assert error in profile["error"]


def test_client_app_through_a_real_transformers_serve(app, tmp_path, served: EndpointModel) -> None:
    """Smoke: the ClientApp's request reaches a real server through a recording proxy, and the tiny
    random model's 2-token reply (no answer block, most likely) scores or abstains."""
    statuses: list[int] = []

    def forward(method: str, path: str, body: dict[str, Any] | None) -> Reply:
        request = urllib.request.Request(
            served.base_url + path.removeprefix("/v1"),
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                statuses.append(response.status)
                return response.status, "application/json", response.read()
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
            return err.code, "application/json", err.read()

    with stub_server(forward) as (url, seen):
        node = {"data-file": _data_file(tmp_path), "endpoint": url, "endpoint-model": served.model}
        started = time.monotonic()
        request = RewardRequest("r1", "org", [RewardItem("dozen", DOZEN, ["<answer>12</answer>", "12"])])
        reply, _ = _call(app, request, "query.reward", node)
    assert isinstance(reply, RewardReply) and reply.methods["model"] + reply.methods["none"] == 1
    assert [(m, p) for m, p, _, _ in seen] == [("POST", "/v1/chat/completions")] and statuses == [200]
    assert seen[0][2]["model"] == served.model and time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"question": "What is 1 + 1?", "answer": "2"}\n[1, 2, 3]\n', "data file line 2: expected a JSON"),
        ("", "data file: empty data file"),
        ('{"question": "What is 1 + 1?", "answer": ""}\n', "data file line 1: field 'answer' is empty"),
        (None, "data file: file not found"),
    ],
    ids=["not-an-object", "empty", "blank-answer", "missing"],
)
def test_client_app_with_a_bad_data_file_says_why_in_its_profile(app, tmp_path, content, error) -> None:
    """The organisation's own file is wrong: its node says so, by line and kind, never its path (the
    server refuses it, counted)."""
    path = tmp_path / "org.jsonl"
    if content is not None:
        path.write_text(content)
    profile, _ = _call(app, None, "query.profile", {"data-file": str(path)})
    assert error in profile["error"] and "org.jsonl" not in profile["error"]
