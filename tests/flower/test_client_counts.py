"""Client-side counts add up across ClientApp processes and rounds, on real Flower messages.

Flower 1.41's Deployment Engine starts a new ClientApp process for every message, so a ClientApp can
report only what its own message was refused for; the server's transport sums those counts per
client and reason. Here every message goes to the real ClientApp in a fresh "process" (its module
reloaded: no cached client, config or counter survives), failures are injected at several of them,
and the replies go through the real :class:`FlowerTransport` that reads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.proto.node_pb2 import NodeInfo  # noqa: E402

from fedgrpo.config import FlowerSettings, load_config  # noqa: E402
from fedgrpo.data import Example, make_qid, write_client_data  # noqa: E402
from fedgrpo.flower import client_app  # noqa: E402
from fedgrpo.flower.codec import read_payload, read_stats, reply_records  # noqa: E402
from fedgrpo.flower.transport import FlowerTransport  # noqa: E402
from fedgrpo.protocol import ErrorReply, ProtocolError, RewardItem, RewardReply, RewardRequest  # noqa: E402
from tests.helpers import delivered, free_port  # noqa: E402

HELD = ("What is 3 + 4?", "7")
OTHER = "How many eggs are in a dozen?"  # held by no one: only a client model could score it


class PerMessageGrid:
    """The part of a Flower Grid the transport uses. Each message reaches the real ClientApp in a fresh
    process (``fresh``: the module reloaded, as Flower 1.41's per-message ``flwr-clientapp``) or in one
    long-lived ClientApp (the Simulation Engine's). ``cut`` / ``bend``: nodes whose next request arrives
    truncated / whose next reply comes back with a negative count. ``names``: the name registered for each
    node's key, as the SuperLink reports it to a deployment's ServerApp."""

    def __init__(
        self,
        nodes: dict[int, dict[str, Any]],
        run_config: dict[str, Any],
        fresh: bool,
        names: dict[int, str] | None = None,
    ) -> None:
        self.nodes, self.run_config, self.fresh, self.names = nodes, run_config, fresh, names or {}
        self.cut: set[int] = set()
        self.bend: set[int] = set()
        self.processes = 0
        self._app = client_app.make_client_app()
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def get_nodes(self) -> list[NodeInfo]:
        return [NodeInfo(node_id=n, name=self.names.get(n, ""), status="online") for n in self.nodes]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            self.processes += 1
            mid, node, content = f"m{self.processes}", message.metadata.dst_node_id, message.content
            if node in self.cut:
                self.cut.discard(node)
                payload = read_payload(content)
                content = RecordDict({"message": ConfigRecord({"payload": payload[: len(payload) // 2]})})
            app = importlib.reload(client_app).make_client_app() if self.fresh else self._app
            context = Context(
                run_id=1,
                node_id=node,
                node_config=self.nodes[node],
                state=RecordDict(),
                run_config=self.run_config,
            )
            request = delivered(content, message.metadata.message_type, mid, src_node_id=1, dst_node_id=node)
            reply = app(message=request, context=context)
            if node in self.bend:
                self.bend.discard(node)
                reply.content["stats"]["rejected.unavailable"] = -1
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in ids if i in self._replies]


def _data_file(path: Path) -> Path:
    write_client_data([Example(make_qid("sums", HELD[0]), "sums", HELD[0], HELD[1])], path)
    return path


def _round(transport: FlowerTransport, n: int) -> dict[str, Any]:
    items = [RewardItem("held", HELD[0], ["<answer>7</answer>"]), RewardItem("other", OTHER, ["12"])]
    requests = {c: RewardRequest(f"r{n}-{c}", c, items) for c in ("org-a", "org-b")}
    return {c: d.reply for c, d in transport.exchange(requests).items()}


@pytest.fixture()
def server_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # as in a ServerApp process


@pytest.mark.parametrize("fresh", [True, False], ids=["process-per-message", "long-lived"])
def test_counts_from_many_clientapp_processes_add_up(tmp_path, server_identity, fresh: bool) -> None:
    cfg = load_config("smoke", ["clients.samples=1", "clients.max_new_tokens=2"])
    down = f"http://127.0.0.1:{free_port()}/v1"  # org-a's model server: nothing listens there
    b_file = _data_file(tmp_path / "b.jsonl")
    nodes = {
        11: {"name": "org-a", "data-file": str(_data_file(tmp_path / "a.jsonl")), "endpoint": down},
        12: {"name": "org-b", "data-file": str(b_file)},
        13: {"name": "org-c"},  # no data file: refused at its profile, and not waited for
    }
    nodes[11]["endpoint-model"] = "m"
    grid = PerMessageGrid(nodes, {"config": cfg.to_yaml(), "overrides": ""}, fresh)
    settings = FlowerSettings(connect_timeout_s=30, profile_timeout_s=5, reward_timeout_s=10)
    transport = FlowerTransport(grid, settings, expected_clients=3)  # type: ignore[arg-type]
    assert transport.client_names == ["org-a", "org-b"] and "data-file" in transport.refusals[13]
    assert transport.startup_seconds < 10  # org-c's refusal ended the wait, not connect_timeout_s

    first = _round(transport, 1)  # org-a: its endpoint is down, so OTHER abstains
    assert isinstance(first["org-a"], RewardReply) and first["org-a"].methods["none"] == 1
    b_file.unlink()  # org-b's file is gone: a new process cannot load its client
    grid.cut.add(11)
    second = _round(transport, 2)  # org-a: its request arrives cut short
    assert isinstance(second["org-a"], ErrorReply) and "malformed request" in second["org-a"].error
    third = _round(transport, 3)  # org-a: down again
    grid.bend.add(11)
    fourth = _round(transport, 4)  # org-a's reply claims a negative count: refused, counted, not added
    assert fourth["org-a"] is None and transport.counts["replies_rejected"] == 1
    for replies in (second, third, fourth):
        if fresh:
            assert isinstance(replies["org-b"], ErrorReply) and "client unavailable" in replies["org-b"].error
        else:  # the long-lived ClientApp still holds org-b's client
            assert isinstance(replies["org-b"], RewardReply)

    # 2 endpoint failures count 2 (a running maximum read 1); a process's count is never counted twice
    injected = {"org-a": {"malformed_request": 1, "model_unavailable": 2}}
    if fresh:
        injected["org-b"] = {"unavailable": 3}
    summary = transport.summary()
    assert summary["client_rejected"] == injected
    assert summary["counts"]["client_rejected_total"] == sum(sum(c.values()) for c in injected.values())
    assert grid.processes == 3 + 2 * 4  # three profiles, two requests a round


def test_a_node_refused_for_who_it_is_never_stands_in_for_a_client_yet_to_come(
    tmp_path, server_identity
) -> None:
    """With registered names, ``expected_clients`` counts organisations: an impostor (a key registered
    as mallory whose node claims org-a) is refused and the start still waits for the third one; an
    organisation whose own profile fails (org-c: no data file) cannot join and is not waited for."""
    cfg = load_config("smoke")
    a = str(_data_file(tmp_path / "a.jsonl"))
    nodes: dict[int, dict[str, Any]] = {
        11: {"data-file": a},
        12: {"data-file": str(_data_file(tmp_path / "b.jsonl"))},
        14: {"data-file": a, "name": "org-a"},
    }
    names = {11: "org-a", 12: "org-b", 13: "org-c", 14: "mallory"}
    settings = FlowerSettings(connect_timeout_s=3, profile_timeout_s=5)
    run_config = {"config": cfg.to_yaml(), "overrides": ""}

    def start(grid: PerMessageGrid) -> FlowerTransport:
        return FlowerTransport(grid, settings, expected_clients=3, identity="registered")  # type: ignore[arg-type]

    waited = start(PerMessageGrid(nodes, run_config, fresh=False, names=names))
    assert waited.client_names == ["org-a", "org-b"] and "claims 'org-a'" in waited.refusals[14]
    assert waited.counts["impostor_refused"] == 1
    assert waited.startup_seconds >= 3  # waited out connect_timeout_s for a third organisation
    nodes[13] = {}  # org-c's SuperNode, its node config naming no data file
    at_once = start(PerMessageGrid(nodes, run_config, fresh=False, names=names))
    assert at_once.client_names == ["org-a", "org-b"] and "data-file" in at_once.refusals[13]
    assert at_once.startup_seconds < 3  # org-c's own refusal ended the wait; mallory's did not count


@pytest.mark.parametrize(
    ("stats", "error"),
    [
        ({"rejected.unavailable": -1}, "negative"),
        ({"rejected.unavailable": 1.0}, "float"),
        ({"rejected.unavailable": [1]}, "list"),
        ({"rejected.elsewhere": 1}, "unknown fields"),
        ({"rejected": 3}, "unknown fields"),  # a running total, as protocol 3's ClientApps sent it
        ({"request_bytes": -5}, "negative"),
    ],
)
def test_reply_counts_must_be_known_non_negative_ints(stats: dict[str, Any], error: str) -> None:
    content = reply_records(RewardReply("r1", "c", [], {"answer": 0, "model": 0, "none": 0}), 10)
    content["stats"] = MetricRecord({**dict(content["stats"]), **stats})
    with pytest.raises(ProtocolError, match=error):
        read_stats(content)


def test_a_reply_carries_only_non_zero_counts() -> None:
    reply = RewardReply("r1", "c", [], {"answer": 0, "model": 0, "none": 0})
    quiet = reply_records(reply, 10, {"model_unavailable": 0})
    assert set(quiet["stats"]) == {"request_bytes", "reply_bytes"}  # nothing else on the wire
    assert read_stats(quiet)["rejected"] == {}
    loud = reply_records(reply, 10, {"model_unavailable": 1})
    assert read_stats(loud)["rejected"] == {"model_unavailable": 1}
    with pytest.raises(ValueError, match="not a rejection count"):
        reply_records(reply, 10, {"somewhere": 1})
