"""What the server trusts and what crosses the wire: declared reward range, message size limits, opaque
item keys, per-reply method counts, and metrics that stay finite whatever a round produced."""

from __future__ import annotations

import json
import random
import zlib
from types import SimpleNamespace

import pytest
import torch

from fedgrpo.client import Client
from fedgrpo.config import load_config
from fedgrpo.data import Question, generate, make_qid
from fedgrpo.protocol import (
    PROTOCOL_VERSION,
    CompetenceRequest,
    ItemScores,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    check_method_counts,
    decode,
    encode,
)
from fedgrpo.protocol.wire import ZLIB
from fedgrpo.selection import AllSelector
from fedgrpo.server import FederatedAdvantage, build_confidence_graph
from fedgrpo.server.stats import RoundStats
from fedgrpo.transport import InProcessTransport
from tests.wire import header, join, split


@pytest.fixture(scope="module")
def sums():
    return generate("sums_1digit", 6, seed=3)


class Recording:
    """A client behind the in-process transport that keeps every request it is sent."""

    def __init__(self, client, seen: list[bytes]) -> None:
        self.name, self._client, self._seen = client.name, client, seen

    def handle(self, payload: bytes) -> bytes:
        self._seen.append(payload)
        return self._client.handle(payload)


# -- the format reward, added by the server --------------------------------------------------------------
def test_the_format_reward_comes_from_the_config() -> None:
    from fedgrpo.run.assemble import build_advantage

    cfg = load_config("smoke", ["federation.format_reward=0.3"])
    assert build_advantage(cfg, InProcessTransport([]), AllSelector()).format_reward == 0.3
    assert FederatedAdvantage(InProcessTransport([]), AllSelector(), 1, 2).format_reward == 0.1


def test_the_server_adds_the_format_reward_to_present_rewards_of_well_formed_candidates(sums) -> None:
    ex = sums[0]
    q = Question(ex.qid, ex.domain, ex.question)
    cands = [f"<answer>{ex.answer}</answer>", "<answer>-1</answer>", f"{ex.answer}"]
    transport = InProcessTransport([Client("holds", sums), Client("empty", [])])
    rewards = FederatedAdvantage(transport, AllSelector(), 2, 3, format_reward=0.5)
    rewards.advantages([q], [cands])
    holds, empty = rewards.last_rewards[0].tolist()
    assert holds == [1.5, 0.5, 0.0]  # correctness from the client, 0.5 where the answer tag is well formed
    assert all(r != r for r in empty)  # abstentions (None) stay missing: no format reward for them
    assert dict(rewards.total.rejected) == {}


# -- size limits, before parsing ------------------------------------------------------------------------
def test_decode_refuses_an_oversized_payload_before_parsing(monkeypatch) -> None:
    from fedgrpo import protocol
    from fedgrpo.protocol import wire

    message = encode(RewardRequest("r", "c", [RewardItem("0", "q" * 20, ["a"])]))  # too short to compress
    assert decode(message, max_bytes=len(message)).kind == "reward"  # the limit is inclusive

    def unreachable(*_: object) -> None:
        raise AssertionError("parsed an oversized payload")

    monkeypatch.setattr(wire.json, "loads", unreachable)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(message, max_bytes=len(message) - 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b" " * (protocol.MAX_MESSAGE_BYTES + 1))


class Inflater:
    """zlib.decompressobj, keeping the size of every output it hands back."""

    def __init__(self, outputs: list[int]) -> None:
        self._real, self._outputs = REAL_DECOMPRESSOBJ(), outputs

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self._real.decompress(data, max_length)
        self._outputs.append(len(out))
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


REAL_DECOMPRESSOBJ = zlib.decompressobj


def test_a_zip_bomb_is_refused_without_inflating_it(monkeypatch) -> None:
    """200 MB of zeros compress to about 200 KB: under the limit as sent, far over it inflated."""
    from fedgrpo.protocol import wire

    deflater = zlib.compressobj(9)
    chunk = bytes(2**20)
    bomb = b"".join(deflater.compress(chunk) for _ in range(200)) + deflater.flush()
    payload = join(header("reward", flags=ZLIB), bomb)
    limit = 2**20
    assert len(payload) < limit
    outputs: list[int] = []
    monkeypatch.setattr(wire.zlib, "decompressobj", lambda: Inflater(outputs))
    with pytest.raises(ProtocolError, match="inflated body exceeds the limit"):
        decode(payload, max_bytes=limit)
    assert outputs and max(outputs) <= limit + 1  # inflated no further than one byte past the limit
    good = encode(RewardRequest("r", "c", [RewardItem("0", "q" * 5000, ["a"] * 10)]))
    assert good[1] & ZLIB and len(good) < 200  # text that compresses is sent so
    assert decode(good, max_bytes=6000).kind == "reward"
    with pytest.raises(ProtocolError, match="inflated body exceeds"):  # the inflated body is bounded too
        decode(good, max_bytes=4000)


def test_client_refuses_an_oversized_request_and_transport_an_oversized_reply(sums) -> None:
    request = RewardRequest("r", "c", [RewardItem("0", sums[0].question, ["x" * 2000])])
    refused = decode(Client("c", sums, max_message_bytes=1024).handle(encode(request)))
    assert refused.kind == "error" and "exceeds" in refused.error

    class Verbose:
        name = "verbose"

        def handle(self, request: bytes) -> bytes:
            noise = random.Random(0)  # rewards zlib cannot shrink below the limit
            scores = [ItemScores("0", [noise.random() for _ in range(2000)])]
            return encode(RewardReply("r", "verbose", scores, {"answer": 1, "model": 0, "none": 0}))

    class NotBytes:
        name = "not_bytes"

        def handle(self, request: bytes) -> str:
            return "{}"

    transport = InProcessTransport([Verbose(), NotBytes()], max_message_bytes=1024)
    out = transport.exchange({"verbose": request, "not_bytes": request})
    assert out["verbose"].failure == "malformed_reply" and "exceeds" in out["verbose"].error
    assert out["not_bytes"].failure == "malformed_reply" and "str" in out["not_bytes"].error


# -- nothing on the wire the protocol does not need -----------------------------------------------------
def _hashes(text: str, domains: set[str]) -> set[str]:
    return {make_qid(d, text) for d in domains}


def test_item_keys_carry_nothing_about_the_question(sums) -> None:
    """Neither reward nor competence item keys hold a qid, or any (domain, question) hash."""
    more = generate("sums_2digit", 4, seed=1)
    domains = {"sums_1digit", "sums_2digit", "syllogism", "", "sums"}
    seen: list[bytes] = []
    transport = InProcessTransport([Recording(Client(n, sums), seen) for n in ("a", "b")])
    rewards = FederatedAdvantage(transport, AllSelector(), 2, 2)
    questions = [Question(e.qid, e.domain, e.question) for e in [*sums[:3], *more[:2], sums[0]]]
    rewards.advantages(questions, [["<answer>1</answer>", "x"]] * len(questions))
    build_confidence_graph(transport, more, lambda t: torch.ones(len(t), 2), neighbours=2)
    assert len(seen) == 4  # two reward requests, two competence requests
    for payload in seen:
        request = decode(payload)
        assert isinstance(request, RewardRequest | CompetenceRequest)
        assert [i.key for i in request.items] == [str(k) for k in range(len(request.items))]
        head, body = split(payload)  # what crossed, inflated: compression must not hide anything
        text = json.dumps(head) + body.decode()
        for item in request.items:
            secrets = {e.qid for e in [*sums, *more]} | _hashes(item.question, domains)
            assert not any(s in text for s in secrets)
        assert "qid" not in text and not any(d in text for d in domains if d)


def test_methods_are_counts_per_reply_unless_the_operator_asks(sums) -> None:
    request = RewardRequest(
        "r", "c", [RewardItem("0", sums[0].question, ["<answer>1</answer>"]), RewardItem("1", "?", ["a"])]
    )
    quiet = decode(Client("c", sums).handle(encode(request)))
    assert isinstance(quiet, RewardReply) and [i.method for i in quiet.items] == [None, None]
    assert quiet.methods == {"answer": 1, "model": 0, "none": 1} and check_method_counts(quiet)
    head, body = split(Client("c", sums).handle(encode(request)))
    assert set(head) == {"v", "kind", "id", "methods", "shape"}  # nothing per item, no name, no bonus
    assert len(body) == 2  # one byte per reward
    assert "item_methods" in split(Client("c", sums, per_item_methods=True).handle(encode(request)))[0]
    loud = decode(Client("c", sums, per_item_methods=True).handle(encode(request)))
    assert isinstance(loud, RewardReply) and [i.method for i in loud.items] == ["answer", "none"]
    assert check_method_counts(loud) == quiet.methods


def test_the_server_counts_methods_and_abstentions_from_the_aggregate(sums) -> None:
    clients = [Client("holds", sums), Client("empty", []), Client("debug", sums, per_item_methods=True)]
    rewards = FederatedAdvantage(InProcessTransport(clients), AllSelector(), 3, 2)
    qs = [Question(e.qid, e.domain, e.question) for e in sums[:2]]
    rewards.advantages(qs, [["<answer>1</answer>", "x"]] * 2)
    summary = rewards.total.summary()
    assert summary["fed/methods"] == {"answer": 4, "none": 2} and summary["fed/abstentions"] == 2
    assert summary["fed/rejected_total"] == 0 and summary["fed/rewards_received"] == 8


def test_protocol_version_is_4() -> None:
    assert PROTOCOL_VERSION == 4 and split(encode(RewardRequest("r", "c", [])))[0]["v"] == 4


# -- metrics stay finite --------------------------------------------------------------------------------
def test_round_stats_never_report_nan_or_infinity() -> None:
    stats = RoundStats(rounds=1, candidates=2, rewards_received=2, reward_sum=1e308)
    stats.merge(RoundStats(reward_sum=1e308, advantage_sq_sum=float("inf"), seconds=float("nan")))
    assert stats.reward_sum == float("inf")  # the sum overflowed
    summary = stats.summary()
    assert summary["fed/reward_mean"] is None and summary["fed/advantage_std"] is None
    assert summary["fed/seconds"] is None
    json.dumps(summary, allow_nan=False)
    assert RoundStats(candidates=1, advantage_sq_sum=-1.0).summary()["fed/advantage_std"] is None


def test_the_metrics_writer_turns_any_nan_into_null(tmp_path) -> None:
    from fedgrpo.run.metrics import MetricsCallback, read_metrics

    rewards = FederatedAdvantage(InProcessTransport([]), AllSelector(), 1, 2)
    rewards._pending = RoundStats(rounds=1, rewards_received=1, reward_sum=float("inf"))
    callback = MetricsCallback(tmp_path / "metrics.jsonl", rewards)
    logs = {"loss": float("nan"), "kl": float("-inf"), "nested": {"a": [1.0, float("nan")]}}
    callback.on_log(None, SimpleNamespace(global_step=1), None, logs)
    (row,) = read_metrics(tmp_path / "metrics.jsonl")
    assert row["trl/loss"] is None and row["trl/kl"] is None and row["trl/nested"] == {"a": [1.0, None]}
    assert row["fed/reward_mean"] is None
