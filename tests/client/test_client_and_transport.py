"""Client-side answer evaluation, the wire format, and the server's checks on replies."""

from __future__ import annotations

import json

import pytest

from fedgrpo.client import AnswerEvaluator, Client
from fedgrpo.data import Question, generate
from fedgrpo.protocol import (
    ItemScores,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
)
from fedgrpo.selection import AllSelector, RandomSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport


@pytest.fixture(scope="module")
def sums():
    return generate("sums_1digit", 6, seed=3)


def test_answer_evaluation_scores_held_questions_and_abstains_otherwise(sums) -> None:
    ev = AnswerEvaluator(sums[:3])
    ex = sums[0]
    right, wrong = f"so <answer>{ex.answer}</answer>", "<answer>-999</answer>"
    result = ev.evaluate(
        "  " + ex.question.upper() + " ", [right, wrong, f"{ex.answer}"]
    )  # normalised lookup
    assert result.method == "answer"
    assert result.rewards == [1.0, 0.0, 0.0]  # correctness only: the server adds the format reward
    other = ev.evaluate(sums[4].question, [right, wrong])
    assert other.method == "none" and other.rewards == [None, None]


def test_client_handle_round_trip_and_malformed_request(sums) -> None:
    client = Client("c0", sums[:3])
    req = RewardRequest(
        "r1", "c0", [RewardItem("x", sums[1].question, [f"<answer>{sums[1].answer}</answer>"])]
    )
    reply = decode(client.handle(encode(req)))
    assert isinstance(reply, RewardReply) and reply.items[0].rewards == [1.0]
    bad = decode(client.handle(b"\xff not json"))
    assert bad.kind == "error" and "malformed" in bad.error
    assert "answer" not in repr(client) and sums[0].question not in repr(client)


def test_transport_counts_real_bytes_and_survives_a_crashing_client(sums) -> None:
    class Crashing:
        name = "boom"

        def handle(self, request: bytes) -> bytes:
            raise RuntimeError("disk on fire")

    class Garbled:
        name = "garbled"

        def handle(self, request: bytes) -> bytes:
            return b"\x00 not a message"

    transport = InProcessTransport([Client("c0", sums), Crashing(), Garbled()])
    req = RewardRequest("r", "c0", [RewardItem("q", sums[0].question, ["a", "b"])])
    out = transport.exchange({"c0": req, "boom": req, "garbled": req})
    reply = out["c0"].reply
    assert isinstance(reply, RewardReply) and out["c0"].failure is None
    assert out["c0"].bytes_down == len(encode(req)) and out["c0"].bytes_up == len(encode(reply))
    assert out["boom"].reply is None and out["boom"].failure == "client_failed"
    assert "disk on fire" in out["boom"].error and out["boom"].bytes_up == 0
    assert out["garbled"].failure == "malformed_reply" and out["garbled"].bytes_up == len(
        b"\x00 not a message"
    )


class Scripted:
    """A misbehaving client: replies with whatever its script makes of the decoded request."""

    def __init__(self, name: str, script) -> None:
        self.name = name
        self.script = script

    def handle(self, request: bytes) -> bytes:
        reply = self.script(decode(request))
        return reply if isinstance(reply, bytes) else encode(reply)


def _reply(request, rewards, request_id=None, items=None, methods=None):
    """A reply with ``rewards`` for every item asked (or for ``items`` of them), bent as asked."""
    n = len(request.items) if items is None else items
    scores = [ItemScores(str(k), rewards) for k in range(n)]
    counts = methods or {"answer": n, "model": 0, "none": 0}
    return RewardReply(request_id or request.request_id, request.client, scores, counts)


def test_bad_replies_are_rejected_counted_and_training_goes_on(sums) -> None:
    g = 3
    good = Client("good", sums)
    clients = [
        good,
        Scripted("short", lambda b: _reply(b, [1.0, 0.0])),
        Scripted("nan", lambda b: _reply(b, [1.0, float("nan"), 0.0])),
        Scripted("inf", lambda b: _reply(b, [1.0, float("inf"), 0.0])),
        Scripted("wrong_id", lambda b: _reply(b, [1.0, 0.0, 1.0], request_id="0badc0de")),
        Scripted("unknown_q", lambda b: _reply(b, [1.0, 0.0], items=2)),  # short, then not asked
        Scripted("unpackable", lambda b: _reply(b, [1.0, 5.0, 0.0])),  # no byte on its grid holds 5
        Scripted("overflow", lambda b: _reply(b, [1.0, 1.7e308, 1.7e308])),
        Scripted("negative", lambda b: _reply(b, [1.0, -0.5, 0.0])),  # off the grid: NaN, not clamped
        Scripted(
            "miscounted", lambda b: _reply(b, [1.0, 0.0, 1.0], methods={"answer": 9, "model": 0, "none": 0})
        ),
        Scripted("garbage", lambda b: b"not a reply"),
    ]
    rewards = FederatedAdvantage(InProcessTransport(clients), AllSelector(), len(clients), g, "mean")
    q = Question(sums[0].qid, sums[0].domain, sums[0].question)
    cands = [f"<answer>{sums[0].answer}</answer>", "<answer>-1</answer>", "no tags"]
    adv = rewards.advantages([q], [cands])[0]
    assert rewards.total.rejected == {
        "wrong_length": 1,
        "non_finite": 5,  # nan, inf and what the grid cannot hold: unpackable, overflow, negative
        "unasked_client": 1,
        "extra_items": 1,  # unknown_q: two items for the one asked, not trusted at all
        "malformed_reply": 1,
        "bad_methods": 1,
    }
    assert rewards.total.rewards_received == g  # only the good client's rewards survive
    assert adv[0] > 0 > adv[2] and adv[0] > adv[1] > adv[2]
    assert rewards.total.bytes_up > 0 and rewards.total.bytes_down_per_client["good"] > 0


def test_reply_from_a_client_that_was_not_asked_is_rejected(sums) -> None:
    class Leaky(InProcessTransport):
        def exchange(self, requests):
            out = super().exchange(requests)
            extra = super().exchange({"other": requests[next(iter(requests))]})
            return {**out, **extra}

    transport = Leaky([Client("a", sums), Client("other", sums)])
    rewards = FederatedAdvantage(transport, RandomSelector(0), 1, 2, "mean")
    rewards.selector.select = lambda qs, cl, m: {q.qid: ["a"] for q in qs}
    q = Question(sums[0].qid, sums[0].domain, sums[0].question)
    rewards.advantages([q], [["<answer>0</answer>", "x"]])
    assert rewards.total.rejected == {"unasked_client": 1}


def test_random_selector_is_seeded_and_resumable() -> None:
    qs = [Question(f"q{i}", "d", "?") for i in range(20)]
    a, b = RandomSelector(7), RandomSelector(7)
    assert a.select(qs, ["x", "y", "z"], 2) == b.select(qs, ["x", "y", "z"], 2)
    state = a.state_dict()
    first = a.select(qs, ["x", "y", "z"], 2)
    c = RandomSelector(0)
    c.load_state_dict(json.loads(json.dumps(state)))
    assert c.select(qs, ["x", "y", "z"], 2) == first
    assert all(len(set(v)) == 2 for v in first.values())
