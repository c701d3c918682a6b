"""Every reply check of fedgrpo.protocol, with a fixed case each: the server's checks on a decoded reply
(:mod:`fedgrpo.protocol.checks`, and :func:`fedgrpo.server.exchange.send` for a client not asked) and
the decoder's (:mod:`fedgrpo.protocol.wire`, :mod:`~fedgrpo.protocol.framing`,
:mod:`~fedgrpo.protocol.legacy`). Each case names the check it meets by its reason or message, so a
case that another check happened to catch would fail here.
"""

from __future__ import annotations

import json
import math
import zlib

import pytest

from fedgrpo.client import Client
from fedgrpo.data import Question, generate
from fedgrpo.protocol import (
    CompetenceReply,
    ErrorReply,
    ItemScores,
    ProtocolError,
    Rejected,
    RewardItem,
    RewardReply,
    RewardRequest,
    VersionMismatch,
    check_competence_bits,
    check_item_count,
    check_method,
    check_method_counts,
    check_reply,
    check_reward_item,
    decode,
    encode,
    method_counts,
)
from fedgrpo.protocol.wire import ITEM_METHODS, RUNS, SPENT, ZLIB
from fedgrpo.selection import AllSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.server.exchange import send
from fedgrpo.transport import InProcessTransport
from tests.wire import header, join, v3

COUNTS = {"answer": 1, "model": 0, "none": 0}


def _reply(request_id: str = "r", client: str = "c", rewards=(1.0,), counts=COUNTS) -> RewardReply:
    return RewardReply(request_id, client, [ItemScores("0", list(rewards))], dict(counts))


def _rejected(reason: str, check, *args) -> Rejected:
    with pytest.raises(Rejected) as err:
        check(*args)
    assert err.value.reason == reason, err.value
    return err.value


# -- the reply itself: check_reply and the exchange --------------------------------------------------------
def test_a_reply_to_the_request_asked_passes() -> None:
    reply = _reply()
    assert check_reply(reply, RewardReply, "c", "r") is reply


def test_a_mismatched_request_id_is_rejected() -> None:
    _rejected("unasked_client", check_reply, _reply(request_id="other"), RewardReply, "c", "r")


def test_a_reply_naming_another_client_is_rejected() -> None:
    _rejected("unasked_client", check_reply, _reply(client="impostor"), RewardReply, "c", "r")


def test_an_error_reply_is_the_clients_error() -> None:
    err = _rejected("client_error", check_reply, ErrorReply("r", "c", "no model"), RewardReply, "c", "r")
    assert err.detail == "no model"


def test_a_reply_of_another_kind_is_malformed() -> None:
    _rejected("malformed_reply", check_reply, CompetenceReply("r", "c", [1]), RewardReply, "c", "r")


def test_a_reply_from_a_client_that_was_not_asked_is_rejected() -> None:
    class Stray(InProcessTransport):
        """Delivers the request to every client, asked or not."""

        def exchange(self, requests):
            request = next(iter(requests.values()))
            return super().exchange({name: request for name in self.client_names})

    sums = generate("sums_1digit", 2, seed=3)
    request = RewardRequest("0badc0de", "a", [RewardItem("0", sums[0].question, ["<answer>1</answer>"])])
    out = send(Stray([Client("a", sums), Client("b", sums)]), {"a": request}, RewardReply)
    assert list(out.replies) == ["a"] and out.stray == ["b"] and out.rejected["b"].reason == "unasked_client"


def test_a_reply_to_another_request_is_rejected_in_a_whole_round() -> None:
    """The request id travels: a client that answers with another id (an old reply, a replay) is not
    taken for the one asked."""

    class Replaying:
        name = "replaying"

        def __init__(self) -> None:
            self.client = Client(self.name, generate("sums_1digit", 2, seed=3))

        def handle(self, payload: bytes) -> bytes:
            reply = decode(self.client.handle(payload))
            assert isinstance(reply, RewardReply)
            return encode(RewardReply("0badc0de", "", reply.items, reply.methods))

    ex = generate("sums_1digit", 2, seed=3)[0]
    server = FederatedAdvantage(InProcessTransport([Replaying()]), AllSelector(), 1, 2)
    server.advantages([Question(ex.qid, ex.domain, ex.question)], [["<answer>1</answer>", "x"]])
    assert dict(server.total.rejected) == {"unasked_client": 1} and server.total.rewards_received == 0


def test_the_sender_is_the_channels_not_the_bytes() -> None:
    payload = encode(_reply(client="whoever"))
    assert b"whoever" not in payload and decode(payload, client="asked").client == "asked"


# -- method counts ----------------------------------------------------------------------------------------
def test_method_counts_that_match_pass() -> None:
    reply = RewardReply("r", "c", [ItemScores("0", [0.5], "answer"), ItemScores("1", [None], "none")], {})
    reply = RewardReply("r", "c", reply.items, {"answer": 1, "model": 0, "none": 1})
    assert check_method_counts(reply) == {"answer": 1, "model": 0, "none": 1}


@pytest.mark.parametrize(
    ("counts", "methods", "detail"),
    [
        ({"answer": 2}, [None, None], "must name"),  # a method missing
        ({"answer": 1, "model": 0, "none": 0, "guess": 1}, [None, None], "must name"),  # unknown method
        ({"answer": 3, "model": 0, "none": -1}, [None, None], "must name"),  # negative
        ({"answer": 1, "model": 0, "none": 0}, [None, None], "add up to 1, not 2"),  # does not add up
        ({"answer": 2, "model": 0, "none": 0}, ["answer", "none"], "differ from the per-item"),
    ],
    ids=["missing", "unknown", "negative", "sum", "per-item"],
)
def test_method_counts_that_do_not_match_the_reply_are_rejected(counts, methods, detail) -> None:
    reply = RewardReply("r", "c", [ItemScores(str(k), [0.5], m) for k, m in enumerate(methods)], counts)
    assert detail in _rejected("bad_methods", check_method_counts, reply).detail


def test_an_unknown_evaluation_method_is_malformed() -> None:
    assert check_method("model") == "model"
    with pytest.raises(ProtocolError, match="unknown evaluation method"):
        check_method("guess")


def test_more_items_by_answer_and_model_than_the_reply_has_decode_as_bad_counts() -> None:
    reply = decode(join(header("reward_reply", methods=[2, 1], shape=[[1, 1]]), b"\x7e"))
    assert isinstance(reply, RewardReply) and reply.methods["none"] == -2
    _rejected("bad_methods", check_method_counts, reply)


# -- rewards ----------------------------------------------------------------------------------------------
def test_rewards_at_the_bounds_are_accepted() -> None:
    assert check_reward_item(ItemScores("0", [0.0, 1.0, None]), 3, set()) == [0.0, 1.0, None]


def test_a_reply_with_more_items_than_asked_is_rejected_whole() -> None:
    reply = RewardReply(
        "r", "c", [ItemScores("0", [1.0]), ItemScores("1", [0.0])], method_counts(["answer"] * 2)
    )
    _rejected("extra_items", check_item_count, reply, 1)
    check_item_count(reply, 2)  # as many as asked: passes


def test_an_item_that_was_not_asked_for_is_rejected() -> None:
    _rejected("unknown_question", check_reward_item, ItemScores("7", [1.0]), None, set())


def test_an_item_scored_twice_is_rejected() -> None:
    _rejected("unknown_question", check_reward_item, ItemScores("0", [1.0]), 1, {"0"})


@pytest.mark.parametrize("rewards", [[1.0], [1.0, 0.0, 1.0]], ids=["fewer", "more"])
def test_a_reward_count_other_than_the_candidates_is_rejected(rewards: list[float]) -> None:
    _rejected("wrong_length", check_reward_item, ItemScores("0", rewards), 2, set())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reward_is_rejected(bad: float) -> None:
    _rejected("non_finite", check_reward_item, ItemScores("0", [0.5, bad]), 2, set())


@pytest.mark.parametrize("bad", [-0.1, 1.0000001, 1.1, 5.0, 1.7e308, -1e-300])
def test_a_reward_outside_zero_one_is_rejected(bad: float) -> None:
    """Correctness only: the format reward is the server's to add, after this check."""
    _rejected("out_of_range", check_reward_item, ItemScores("0", [0.5, bad]), 2, set())


# -- competence bits --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bits", "message"),
    [
        ([0, 1], "2 entries, expected 3"),
        ([0, 1, 1, 0], "4 entries"),
        ([0, 2, 1], "entry 1"),
        ([0, 0.5, 1], "entry 1"),
        ([0, 1.0, 1], "entry 1"),
        ([True, 0, 1], "entry 0"),  # a bool is an int to Python, not a bit to the server
        ([0, False, 1], "entry 1"),
        ([0, 1, "1"], "entry 2"),
        ([0, None, 1], "entry 1"),
        (None, "NoneType"),
        ({"0": 1, "1": 0, "2": 1}, "dict"),
        ((0, 1, 1), "tuple"),
        ("011", "str"),
    ],
)
def test_competence_bits_are_checked_without_coercion(bits: object, message: str) -> None:
    with pytest.raises(Rejected, match=message) as err:
        check_competence_bits(bits, 3)
    assert err.value.reason == "invalid_bits"


def test_competence_bits_accepted() -> None:
    assert check_competence_bits([0, 1, 1], 3) == [0, 1, 1]
    assert check_competence_bits([], 0) == []


# -- the decoder ------------------------------------------------------------------------------------------
REPLY = header("reward_reply", methods=[1, 0], shape=[[1, 1]])
RUNS_REPLY = header("reward_reply", methods=[1, 0], shape=[[1, 1], [0, 1]])  # explicit run-length pairs


def raw_reply(fields: bytes, body: bytes = b"", flags: int = 0) -> bytes:
    """A reward reply of request "r" with its fields written by hand (counts [1, 0] first)."""
    return bytes([4, 2 | flags, 1]) + b"r\x01\x00" + fields + body


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "no message header"),
        (b"\x04", "no message header"),
        (b"[]", "not a FedGRPO message"),
        (b"{not json\n", "neither a FedGRPO message header"),
        (join({**REPLY, "kind": 5}, b"\x00"), "unknown message kind 5"),
        (join({**REPLY, "kind": 7}, b"\x00"), "unknown message kind 7"),
        (join(header("error", flags=ITEM_METHODS), b"x"), "not defined for a 'error'"),
        (join(header("competence", flags=SPENT), b"{}"), "not defined for a 'competence'"),
        (join(header("reward_reply")), "message truncated"),  # no counts at all
        (bytes([4, 2, 1]) + b"r\x81\x00\x00\x01\x00", "padding byte"),
        (bytes([4, 2, 1]) + b"r" + b"\xff" * 10, "longer than 9 bytes"),
        (bytes([4, 4, 2]) + b"\xff\xfe", "request id is not UTF-8"),
        (join(REPLY, b"\x80"), "reward byte 0x80"),
        (join(REPLY, b"\x00\x00"), "shape does not cover the 2"),  # two rewards for one item of one
        (join(REPLY), "shape does not cover the 0"),
        (join({**RUNS_REPLY, "shape": [[1, 10**6]]}, b"\x00"), "shape does not cover"),  # item bomb
        (join({**RUNS_REPLY, "shape": [[0, 10**6], [1, 1]]}, b"\x00"), "shape does not cover"),
        (raw_reply(b"\xe8\x07\x01\x01", b"\x00", RUNS), "shape claims more runs"),  # 1000 runs
        (raw_reply(b"\x00", b"\x00"), "at least one reward per item"),
        (raw_reply(b"\x03", b"\x00" * 4), "not items of 3"),
        (join({**REPLY, "item_methods": [5]}, b"\x00"), "a per-item method must be one of"),
        (raw_reply(b"\x01", b"\x00", ITEM_METHODS), "need the explicit shape"),
        (join({**REPLY, "privacy_spent": [-1.0, 0.0]}, b"\x00"), "privacy_spent"),
        (join({**REPLY, "privacy_spent": [math.nan, 0.0]}, b"\x00"), "privacy_spent"),
        (join({**REPLY, "privacy_spent": [math.inf, 0.0]}, b"\x00"), "privacy_spent"),
        (join({**REPLY, "privacy_spent": [1.0, 1.0]}, b"\x00"), "privacy_spent"),
        (join({**REPLY, "privacy_spent": [1.0, -1e-9]}, b"\x00"), "privacy_spent"),
        (join({**REPLY, "flags": ZLIB}, b"\xff\xff"), "not zlib data"),
        (join({**REPLY, "flags": ZLIB}, zlib.compress(b"\x00") + b"tail"), "one complete zlib stream"),
        (join({**REPLY, "flags": ZLIB}, zlib.compress(b"\x00")[:-2]), "one complete zlib stream"),
        (join(header("competence_reply", n=9), b"\xff"), "9 bits do not fill 1 bytes"),
        (join(header("competence_reply", n=4), b"\xf0\x00"), "4 bits do not fill 2 bytes"),
        (join(header("competence_reply", n=4), b"\xf1"), "padding bits must be 0"),
        (join(header("error"), b"\xff\xfe"), "error text is not UTF-8"),
        (join(header("reward"), b"\xff"), "reward request body is not JSON"),
        (join(header("reward"), b"[]"), "not a JSON object"),
        (join(header("reward"), b'{"questions":["q"]}'), "'candidates' missing"),
        (join(header("reward"), b'{"questions":[1],"candidates":[[]]}'), "'questions' missing or not"),
        (join(header("reward"), b'{"questions":["q"],"candidates":[]}'), "one candidate list per item"),
        (join(header("reward"), b'{"questions":["q"],"candidates":[[]],"x":1}'), "one candidate list"),
        (join(header("reward"), b'{"questions":["q"],"candidates":[[1]]}'), "lists of strings"),
        (join(header("reward"), b"[" * 100_000), "is not JSON"),  # too deep for the parser
        (join(header("reward"), b'{"questions":' + b"9" * 5000 + b"}"), "is not JSON"),  # 4300+ digits
        (join(header("competence"), b'{"questions":["q"],"answers":[]}'), "one answer per item"),
    ],
)
def test_decode_refuses_malformed_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(payload)


def test_a_zip_bomb_is_refused_at_the_limit() -> None:
    payload = join(header("reward", flags=ZLIB), zlib.compress(bytes(10_000)))
    with pytest.raises(ProtocolError, match="inflated body exceeds the limit of 5000"):
        decode(payload, max_bytes=5000)


def test_a_payload_over_the_limit_is_refused_before_it_is_read() -> None:
    payload = encode(_reply())
    assert decode(payload, max_bytes=len(payload)).kind == "reward_reply"  # the limit is inclusive
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(payload, max_bytes=len(payload) - 1)


# -- another protocol version -----------------------------------------------------------------------------
def test_a_protocol_3_message_is_refused_naming_both_versions() -> None:
    old = v3("reward_reply", "abc", methods=[1, 0, 0], bonus=0.1, shape=[[1, 1]]) + b"\x00"
    with pytest.raises(VersionMismatch, match="peer speaks FedGRPO protocol 3, this side speaks 4"):
        decode(old)


@pytest.mark.parametrize("version", [3, 5])
def test_a_binary_message_of_another_version_is_refused_naming_both(version: int) -> None:
    with pytest.raises(VersionMismatch, match=f"protocol {version}, this side speaks 4"):
        decode(bytes([version]) + encode(_reply())[1:])


def test_a_protocol_3_request_gets_an_error_an_old_server_can_read() -> None:
    """An old (v3) server asks a v4 client: the answer is a v3 error reply, with the v3 request's id
    and the client's name, saying which versions met (what the old server's decoder shows)."""
    sums = generate("sums_1digit", 2, seed=3)
    request = v3("reward", "31a3d892b833e981", "org") + b'{"questions":["q"],"candidates":[["a"]]}'
    answer = Client("org", sums).handle(request)
    line, newline, body = answer.partition(b"\n")
    assert newline and not body
    reply = json.loads(line)
    assert reply == {
        "v": 3,
        "kind": "error",
        "id": "31a3d892b833e981",
        "client": "org",
        "error": "peer speaks FedGRPO protocol 3, this side speaks 4",
    }
    assert answer.startswith(b'{"v":3,"kind":"error",')  # the header a v3 decoder reads first
