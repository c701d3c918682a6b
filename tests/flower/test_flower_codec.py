"""The Flower record codec and the ClientApp's handling of bad input, on real Flower objects."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402

from fedgrpo.config import ConfigError, load_config, load_config_text  # noqa: E402
from fedgrpo.flower import client_app as apps  # noqa: E402
from fedgrpo.flower.codec import (  # noqa: E402
    content_bytes,
    from_records,
    read_payload,
    read_stats,
    to_records,
)
from fedgrpo.protocol import (  # noqa: E402
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ItemScores,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
)
from fedgrpo.simulation.flower import make_virtual_client_app  # noqa: E402
from tests.helpers import delivered  # noqa: E402
from tests.wire import join, split, v3  # noqa: E402

MESSAGES = [
    RewardRequest(
        "r1",
        "client-0",
        [RewardItem("0", "2+2?", ["<answer>4</answer>", "5"]), RewardItem("1", "x", [])],
    ),
    RewardRequest("r2", "client-1", []),
    RewardReply(
        "r1",
        "client-0",
        [ItemScores("0", [1.0, None]), ItemScores("1", [])],
        {"answer": 1, "model": 0, "none": 1},
    ),
    RewardReply(
        "r3", "client-0", [ItemScores("0", [float("nan"), 0.5])], {"answer": 0, "model": 1, "none": 0}
    ),
    RewardReply(  # per-item methods: only with federation.per_item_methods
        "r4",
        "client-0",
        [ItemScores("0", [1.0, None], "answer"), ItemScores("1", [], "none")],
        {"answer": 1, "model": 0, "none": 1},
    ),
    RewardReply("r5", "client-0", [], {"answer": 0, "model": 0, "none": 0}),
    CompetenceRequest("c1", "client-2", [CompetenceItem("a1", "3*3?", "9")]),
    CompetenceReply("c1", "client-2", [1, 0, 1]),
    ErrorReply("r1", "client-0", "no model"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.kind)
def test_records_carry_the_protocols_own_bytes(message) -> None:
    content = to_records(message)
    # one encoding: Flower carries exactly the bytes the in-process transport does
    assert list(content) == ["message"] and dict(content["message"]) == {"payload": encode(message)}
    assert read_payload(content) == encode(message)
    assert encode(from_records(content)) == encode(message)
    assert content_bytes(content) == len("payload") + len(encode(message))


def _broken(mutate) -> RecordDict:
    content = to_records(MESSAGES[2])
    mutate(content)
    return content


def _bent(**fields) -> ConfigRecord:
    head, body = split(encode(MESSAGES[2]))
    return ConfigRecord({"payload": join({**head, **fields}, body)})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.pop("message"),
        lambda c: c.__setitem__("message", MetricRecord({"payload": 1.0})),  # wrong record type
        lambda c: c["message"].__setitem__("payload", "text"),  # wrong value type
        lambda c: c["message"].__setitem__("extra", b"x"),  # nothing beside the payload
        lambda c: c.__setitem__("message", _bent(v=99)),
        lambda c: c.__setitem__("message", _bent(kind=7)),
        lambda c: c.__setitem__("message", _bent(shape=[[5, 1]])),  # the shape and the bytes disagree
        lambda c: c.__setitem__("message", _bent(item_methods=[9, 9])),
    ],
    ids=["missing", "record-type", "value-type", "extra", "version", "kind", "shape", "item-methods"],
)
def test_malformed_records_raise_protocol_error(mutate) -> None:
    with pytest.raises(ProtocolError):
        from_records(_broken(mutate))


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def _request(content: RecordDict, kind: str = "query.reward") -> Message:
    return delivered(content, kind)


@pytest.fixture()
def client_app():
    from flwr.supercore.task_identity import TaskIdentity

    # what a ServerApp process has set when it builds instruction messages
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    cfg = load_config("smoke")
    return make_virtual_client_app(cfg.to_yaml()), cfg


def _call(app, message: Message, node: dict) -> Message:
    # a real ClientApp called as Flower calls it; the reply must carry records, never raise
    return app(message=message, context=_context(node))


def test_client_app_profile_and_reward(client_app) -> None:
    app, cfg = client_app
    reply = _call(app, _request(RecordDict(), "query.profile"), {"partition-id": 1})
    profile = reply.content["profile"]
    assert profile["name"] == "client-1" and profile["evaluates"] == ["answer"] and profile["domains"]
    request = RewardRequest(
        "r1", "client-1", [RewardItem("0:unknown", "What is 2+2?", ["<answer>4</answer>"])]
    )
    reply = _call(app, _request(to_records(request)), {"partition-id": 1})
    got = from_records(reply.content)
    assert isinstance(got, RewardReply) and got.methods["none"] == 1  # it does not hold the question
    assert got.items[0].method is None and got.items[0].rewards == [None]  # no per-item method
    stats = read_stats(reply.content)
    assert stats["request_bytes"] == len(encode(request)) and stats["reply_bytes"] == len(encode(got))


@pytest.mark.parametrize("case", ["oversized", "wrong-records", "wrong-kind", "no-client"])
def test_client_app_rejects_bad_input_with_a_counted_error(client_app, case: str) -> None:
    app, cfg = client_app
    node: dict = {"partition-id": 0}
    good = RewardRequest("r1", "client-0", [RewardItem("0:q", "2+2?", ["4"])])
    if case == "oversized":
        content = to_records(RewardRequest("r1", "client-0", [RewardItem("0:q", "x" * 70_000_000, ["4"])]))
        message = _request(content)
    elif case == "wrong-records":
        content = to_records(good)
        content["message"] = ConfigRecord({"payload": "not bytes"})
        message = _request(content)
    elif case == "wrong-kind":
        message = _request(to_records(good), "query.competence")
    else:
        message, node = _request(to_records(good)), {"partition-id": 99}
    reply = _call(app, message, node)
    got = from_records(reply.content)
    assert isinstance(got, ErrorReply) and got.error
    reason = "unavailable" if case == "no-client" else "malformed_request"
    assert read_stats(reply.content)["rejected"] == {reason: 1}  # the server sees this message's count


def test_client_app_answers_a_protocol_3_server_in_its_own_form(client_app) -> None:
    """An old server's request (a JSON header line) gets a v3 error reply naming both versions: what
    that server's decoder reads, in the records it expects."""
    app, _ = client_app
    old = v3("reward", "31a3d892b833e981", "client-0") + b'{"questions":["2+2?"],"candidates":[["4"]]}'
    reply = _call(app, _request(RecordDict({"message": ConfigRecord({"payload": old})})), {"partition-id": 0})
    line, _, rest = read_payload(reply.content).partition(b"\n")
    head = json.loads(line)
    assert rest == b"" and (head["v"], head["kind"], head["id"]) == (3, "error", "31a3d892b833e981")
    assert head["error"] == "peer speaks FedGRPO protocol 3, this side speaks 4"
    # the stats record an old server reads: one running total, as protocol 3's ClientApps sent it
    assert dict(reply.content["stats"]) == {"request_bytes": 0, "reply_bytes": len(line) + 1, "rejected": 1}


def test_config_text_and_flower_settings_validation(tmp_path) -> None:
    cfg = load_config("smoke")
    assert load_config_text(cfg.to_yaml()) == cfg
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    deploy = [
        "federation.transport=flower-deployment",
        "flower.num_supernodes=3",
        f"server.questions={tmp_path / 'questions.jsonl'}",
        f"server.heldout={q}",
    ]
    (tmp_path / "questions.jsonl").write_text('{"question": "What is 1 + 1?"}\n')
    with pytest.raises(ConfigError, match="root_certificates"):
        load_config("smoke", deploy)
    with pytest.raises(ConfigError, match="no file"):
        load_config("smoke", [*deploy, "flower.root_certificates=/nope.crt"])
    with pytest.raises(ConfigError, match="host:port"):
        load_config("smoke", ["flower.superlink=localhost"])
    with pytest.raises(ConfigError, match="competence_timeout_s"):
        load_config("smoke", ["flower.reward_timeout_s=100", "flower.competence_timeout_s=10"])
    assert load_config("smoke", [*deploy, "flower.insecure=true"])


def test_a_client_reads_only_its_part_of_a_deployments_run_config(tmp_path) -> None:
    """An organisation's machine has none of the server's paths: its ClientApp must not need them."""
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here")
    cfg = load_config(
        "smoke",
        [
            "federation.transport=flower-deployment",
            "flower.num_supernodes=3",
            f"server.questions={q}",
            f"server.heldout={q}",
            f"flower.root_certificates={ca}",
            "clients.samples=3",
            "seed=7",
        ],
    )
    text = cfg.to_yaml()
    q.unlink(), ca.unlink()  # now "on another machine"
    seen = apps.config_from_run_config({"config": text, "overrides": ""})
    assert seen.clients.samples == 3 and seen.seed == 7
    assert "format_reward" not in apps.client_view(cfg.model_dump())["federation"]  # the server adds it
    assert seen.server.questions is None and seen.flower.root_certificates is None
    assert decode(encode(MESSAGES[0]), client="client-0") == MESSAGES[0]  # the name is the channel's


def test_per_item_methods_only_when_the_run_asks_for_them() -> None:
    """By default a ClientApp's reply counts methods per reply; ``federation.per_item_methods`` adds
    them per item, and a deployed client reads that switch from its part of the run config."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    request = RewardRequest("r1", "client-1", [RewardItem("0", "What is 2+2?", ["<answer>4</answer>"])])
    for switch, expected in [(False, None), (True, "none")]:
        cfg = load_config("smoke", [f"federation.per_item_methods={switch}"])
        reply = _call(
            make_virtual_client_app(cfg.to_yaml()), _request(to_records(request)), {"partition-id": 1}
        )
        got = from_records(reply.content)
        assert isinstance(got, RewardReply) and got.items[0].method == expected
        assert got.methods == {"answer": 0, "model": 0, "none": 1}
        head, _ = split(read_payload(reply.content))
        assert ("item_methods" in head) is switch  # nothing per item on the wire unless asked
    assert "per_item_methods" in apps.CLIENT_KEYS["federation"]


def test_flower_transport_refuses_an_oversized_reply_before_reading_it(monkeypatch) -> None:
    from collections import Counter

    from flwr.supercore.task_identity import TaskIdentity

    from fedgrpo.config import FlowerSettings
    from fedgrpo.flower import transport as flower_transport
    from fedgrpo.flower.codec import reply_records

    server = flower_transport.FlowerTransport.__new__(flower_transport.FlowerTransport)  # no Grid needed
    server._settings, server.counts = FlowerSettings(max_message_bytes=4096), Counter()
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # as in a ServerApp process
    noise = random.Random(0)  # rewards zlib cannot shrink below the limit
    rewards = [noise.random() for _ in range(8000)]
    big = RewardReply("r1", "c", [ItemScores("0", rewards)], {"answer": 1, "model": 0, "none": 0})

    def unreachable(payload, max_bytes):
        raise AssertionError("an oversized reply must not be parsed")

    monkeypatch.setattr(flower_transport.protocol, "decode", unreachable)
    delivery = server._read_reply(
        "c", 100, Message(reply_records(big, 100), dst_node_id=1, message_type="query.reward")
    )
    assert delivery.reply is None and delivery.failure == "malformed_reply" and "exceeds" in delivery.error
    assert server.counts["replies_rejected"] == 1


def test_flower_transport_refuses_an_oversized_profile(monkeypatch) -> None:
    from collections import Counter

    from flwr.supercore.task_identity import TaskIdentity

    from fedgrpo.config import FlowerSettings
    from fedgrpo.flower import transport as flower_transport

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    server = flower_transport.FlowerTransport.__new__(flower_transport.FlowerTransport)  # no Grid needed
    server._settings, server.counts, server._identity = (
        FlowerSettings(max_message_bytes=4096),
        Counter(),
        "profile",
    )
    server.refusals, server._unanswered, server._unable = {}, {}, {}
    replies = {}
    for node, domains in [(5, ["d" * 5000]), (6, ["d"])]:
        profile = RecordDict(
            {"profile": ConfigRecord({"name": f"n{node}", "domains": domains, "evaluates": []})}
        )
        replies[f"m{node}"] = delivered(profile, "query.profile", f"m{node}", src_node_id=node, dst_node_id=1)
    monkeypatch.setattr(server, "_send_and_receive", lambda messages, timeout: ([], replies))
    monkeypatch.setattr(server, "_event", lambda *a: None)
    server._nodes, server._node_names, server.profiles = {}, {}, {}
    monkeypatch.setattr(flower_transport, "read_profile", _only_small(flower_transport.read_profile))
    server._profile([5, 6])
    assert set(server.refusals) == {5} and "exceeds" in server.refusals[5] and server._nodes == {"n6": 6}


def _only_small(read):
    def guarded(content):
        assert content_bytes(content) < 4096, "an oversized profile must not be read"
        return read(content)

    return guarded


def test_waiting_for_nodes_stops_when_enough_joined_or_at_the_deadline() -> None:
    from fedgrpo.flower.transport import wait_until

    polls = iter([0, 1, 3])
    seen: list[int] = []

    def three_joined() -> bool:
        seen.append(next(polls))
        return seen[-1] >= 3

    assert wait_until(three_joined, timeout_s=5.0, interval_s=0.0) and seen == [0, 1, 3]
    calls = []
    assert not wait_until(lambda: calls.append(1) or False, timeout_s=0.05, interval_s=0.01)
    assert len(calls) >= 2  # polled until the deadline, then gave up
