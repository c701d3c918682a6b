"""An organisation's transparency log holds exactly the bytes the server received, reply by reply,
on real Flower messages through the real ClientApp (a fresh process per message) and transport."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import Message  # noqa: E402

from fedgrpo.config import FlowerSettings, load_config  # noqa: E402
from fedgrpo.flower.codec import PROFILE, read_payload  # noqa: E402
from fedgrpo.flower.reply_log import question_hash, read_log, sent_bytes, summarise  # noqa: E402
from fedgrpo.flower.transport import FlowerTransport  # noqa: E402
from fedgrpo.protocol import RewardReply  # noqa: E402
from tests.flower.test_client_counts import HELD, OTHER, PerMessageGrid, _data_file, _round  # noqa: E402


class RecordingGrid(PerMessageGrid):
    """Also keeps, per node, what the server pulled: profile records and reply payloads."""

    received: dict[int, list[bytes | dict]]

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        replies = super().pull_messages(ids)
        for reply in replies:
            node = reply.metadata.src_node_id
            if PROFILE in reply.content.config_records:
                got: bytes | dict = dict(reply.content.config_records[PROFILE])
            else:
                got = read_payload(reply.content)
            self.received.setdefault(node, []).append(got)
        return replies


@pytest.fixture()
def server_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # as in a ServerApp process


def test_the_reply_log_equals_what_the_server_received(tmp_path: Path, server_identity: None) -> None:
    cfg = load_config("smoke", ["clients.samples=1", "clients.max_new_tokens=2", "name=logged"])
    own_log = tmp_path / "state" / "replies.jsonl"
    nodes = {
        11: {"name": "org-a", "data-file": str(_data_file(tmp_path / "a.jsonl")), "reply-log": str(own_log)},
        12: {"name": "org-b", "data-file": str(_data_file(tmp_path / "b.jsonl")), "privacy-epsilon": 1.0},
    }
    grid = RecordingGrid(nodes, {"config": cfg.to_yaml(), "overrides": ""}, fresh=True)
    grid.received = {}
    settings = FlowerSettings(connect_timeout_s=30, profile_timeout_s=5, reward_timeout_s=10)
    transport = FlowerTransport(grid, settings, expected_clients=2)  # type: ignore[arg-type]
    for n in range(2):
        replies = _round(transport, n)
        assert all(isinstance(r, RewardReply) for r in replies.values())
    logs = {11: own_log, 12: tmp_path / "b.jsonl.replies.jsonl"}  # reply-log, else next to the data file
    for node, path in logs.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        entries = read_log(path)
        logged = [e["profile"] if e["profile"] is not None else sent_bytes(e) for e in entries]
        assert logged == grid.received[node]  # every reply, byte for byte, in order
        rewards = [e for e in entries if e["asked"]["kind"] == "reward"]
        assert [e["asked"]["items"] for e in rewards] == [2, 2]
        assert rewards[0]["asked"]["questions"] == [question_hash(HELD[0]), question_hash(OTHER)]
        assert all(e["run"] == "logged" and e["flower_run"] == 1 for e in entries)
        assert HELD[0] not in path.read_text()  # questions are fingerprinted, not copied
    (summary_b,) = summarise(read_log(logs[12]))
    assert summary_b["replies"] == {"profile": 1, "reward": 2} and summary_b["questions"] == 2
    assert summary_b["bytes_sent"] == sum(len(b) for b in grid.received[12] if isinstance(b, bytes))
    assert summary_b["privacy_spent"][0] > 0  # org-b releases with privacy: its spend is logged
    (summary_a,) = summarise(read_log(own_log))
    assert summary_a["privacy_spent"] is None


def test_a_reply_that_cannot_be_logged_is_not_sent(tmp_path: Path, server_identity: None) -> None:
    cfg = load_config("smoke", ["clients.samples=1", "clients.max_new_tokens=2"])
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    node = {
        "name": "org-a",
        "data-file": str(_data_file(tmp_path / "a.jsonl")),
        "reply-log": str(blocked / "x"),
    }
    grid = RecordingGrid({11: node}, {"config": cfg.to_yaml(), "overrides": ""}, fresh=True)
    grid.received = {}
    settings = FlowerSettings(connect_timeout_s=5, profile_timeout_s=5, reward_timeout_s=10)
    with pytest.raises(RuntimeError, match="refused"):
        FlowerTransport(grid, settings, expected_clients=1)  # type: ignore[arg-type]
    (profile,) = grid.received[11]
    assert isinstance(profile, dict) and "reply log cannot be written" in str(profile["error"])
    assert "org-a" not in str(profile) and "sums" not in str(profile)  # nothing of the organisation's
