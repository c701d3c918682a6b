"""Property-based fuzzing of everything that reads what a client sent.

Each property holds for any input: decoding raises ProtocolError or yields a message, every check
raises Rejected or passes a well-formed value, and a whole reward round with misbehaving clients
never raises, counts one rejection per bad client and returns finite advantages. The default run
keeps the example counts small (a few seconds in all); ``-m slow`` runs each with many more.
Flower records: tests/protocol/test_protocol_fuzz_records.py.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import strategies as st  # noqa: E402

from fedgrpo.client import Client  # noqa: E402
from fedgrpo.data import Question, generate  # noqa: E402
from fedgrpo.protocol import (  # noqa: E402
    METHODS,
    PROTOCOL_VERSION,  # noqa: E402
    CompetenceReply,
    ErrorReply,
    ItemScores,
    Message,
    Rejected,
    RewardReply,
    check_competence_bits,
    check_method_counts,
    check_reply,
    check_reward_item,
    decode,
    encode,
    method_counts,
    unpack_reward,
)
from fedgrpo.protocol.wire import SPENT, ZLIB  # noqa: E402
from fedgrpo.selection import AllSelector  # noqa: E402
from fedgrpo.server import FederatedAdvantage  # noqa: E402
from fedgrpo.transport import InProcessTransport  # noqa: E402
from tests import wire  # noqa: E402
from tests.fuzzing import (  # noqa: E402
    PROPERTIES,
    bodies,
    decodes_or_refuses,
    fuzz,
    headers,
    join,
    json_values,
    many_more,
    messages,
    mutate_payload,
    reward_replies,
    rewards,
    text,
)

# -- decode ---------------------------------------------------------------------------------------------
REPLY = wire.header("reward_reply", methods=[1, 0])


@fuzz(st.binary(max_size=200), examples=60)
def test_decode_arbitrary_bytes(payload: bytes) -> None:
    decodes_or_refuses(payload)
    decodes_or_refuses(bytes([PROTOCOL_VERSION]) + payload)
    decodes_or_refuses(wire.join(REPLY) + payload)  # any shape, fields and rewards
    decodes_or_refuses(wire.join({**REPLY, "shape": [[2, 1]]}) + payload)  # any packed rewards
    decodes_or_refuses(wire.join({**REPLY, "shape": [[2, 1]], "flags": ZLIB}) + payload)  # "compressed"


@fuzz(headers, bodies, examples=80)
def test_decode_arbitrary_headers(header: bytes, body: bytes) -> None:
    decodes_or_refuses(header + body)
    decodes_or_refuses(header + zlib.compress(body))


@fuzz(json_values, bodies, examples=40)
def test_decode_a_protocol_3_json_header_line(value: Any, body: bytes) -> None:
    """What an older peer sends: refused (naming its version where it says one), never misread."""
    assert decodes_or_refuses(join(value, body)) is None


@fuzz(messages, examples=60)
def test_valid_messages_round_trip(message: Message) -> None:
    assert encode(decode(encode(message))) == encode(message)


@fuzz(reward_replies(), examples=60)
def test_packed_rewards_are_exact_on_the_grid_and_near_elsewhere(reply: RewardReply) -> None:
    """Grid values (0, 1, k / 126: every answer-based one) come back exactly; any other reward the
    client could send comes back within half a grid step (1/252), and what the grid cannot hold as NaN."""
    got = decode(encode(reply))
    assert isinstance(got, RewardReply)
    for sent, back in zip(reply.items, got.items, strict=True):
        for r, b in zip(sent.rewards, back.rewards, strict=True):
            if r is None:
                assert b is None
            elif r in [k / 126 for k in range(127)]:
                assert b == r
            elif b is not None and not math.isnan(b):
                assert abs(b - r) <= 0.5 / 126 + 1e-12
            else:  # unpackable: NaN, infinite, or no byte within half a step of it
                assert b is not None and math.isnan(b)
                near = [unpack_reward(code) for code in range(127)]
                assert all(v is None or not abs(v - r) < 0.5 / 126 for v in near)


@fuzz(reward_replies() | messages, st.data(), examples=200)  # reward replies: what the server parses most
def test_decode_mutated_messages(message: Message, data: st.DataObject) -> None:
    decodes_or_refuses(mutate_payload(data.draw, encode(message)))


# -- the server's checks --------------------------------------------------------------------------------
@fuzz(messages, st.sampled_from([RewardReply, CompetenceReply]), text, text, examples=60)
def test_check_reply_on_any_message(message: Message, expected: type, client: str, request_id: str) -> None:
    try:
        checked = check_reply(message, expected, client, request_id)
    except Rejected as err:
        assert err.reason in {"client_error", "malformed_reply", "unasked_client"}
        return
    assert isinstance(checked, expected) and (checked.client, checked.request_id) == (client, request_id)


@fuzz(st.lists(rewards, max_size=5), st.none() | st.integers(0, 5), examples=80)
def test_check_reward_item_on_any_rewards(values: list, expected: int | None) -> None:
    item = ItemScores("k", [None if r is None else float(r) for r in values])
    try:
        got = check_reward_item(item, expected, set())
    except Rejected as err:
        assert err.reason in {"unknown_question", "wrong_length", "non_finite", "out_of_range"}
        return
    assert len(got) == expected and all(r is None or 0.0 <= r <= 1.0 for r in got)


@fuzz(json_values, st.integers(0, 4), examples=80)
def test_check_competence_bits_on_any_value(bits: Any, expected: int) -> None:
    try:
        got = check_competence_bits(bits, expected)
    except Rejected as err:
        assert err.reason == "invalid_bits"
        return
    assert len(got) == expected and all(type(b) is int and b in (0, 1) for b in got)


@fuzz(reward_replies(), st.dictionaries(st.sampled_from([*METHODS, "x"]), st.integers(-2, 5)), examples=60)
def test_check_method_counts_on_any_counts(reply: RewardReply, counts: dict[str, int]) -> None:
    reply = RewardReply(reply.request_id, reply.client, reply.items, counts)
    try:
        got = check_method_counts(reply)
    except Rejected as err:
        assert err.reason == "bad_methods"
        return
    assert set(got) == set(METHODS) and sum(got.values()) == len(reply.items)


# -- a whole reward round with misbehaving clients ------------------------------------------------------
MAX_BYTES = 1 << 16
BAD = ["bytes", "json", "not_bytes", "raises", "error", "wrong_id", "wrong_kind", "reward", "length"]
BAD += ["extra_item", "shape", "counts", "per_item", "huge", "bomb", "flags"]
EXAMPLES = generate("sums_1digit", 8, seed=5)


class Misbehaving:
    """Answers each request with an honest reply bent in exactly one way (``how``), drawn per request."""

    def __init__(self, name: str, how: str, data: st.DataObject) -> None:
        self.name, self.how, self.data = name, how, data
        self._honest = Client(name, EXAMPLES)

    def handle(self, payload: bytes) -> Any:
        draw, how = self.data.draw, self.how
        honest = self._honest.handle(payload)
        reply = decode(honest)
        assert isinstance(reply, RewardReply)
        items, counts = [list(i.rewards) for i in reply.items], dict(reply.methods)
        k = draw(st.integers(0, len(items) - 1))
        head, body = wire.split(honest)
        if how == "bytes":
            return draw(st.binary(max_size=100))
        if how == "json":
            return join(draw(json_values), draw(bodies))
        if how == "not_bytes":
            return draw(st.none() | st.text(max_size=5) | st.just(bytearray(b"{}")))
        if how == "raises":
            raise draw(st.sampled_from([RuntimeError("boom"), MemoryError(), KeyError("x")]))
        if how == "error":
            return encode(ErrorReply(reply.request_id, self.name, draw(text)))
        if how == "wrong_kind":
            return encode(CompetenceReply(reply.request_id, self.name, [1]))
        if how == "shape":  # the header's shape and the packed rewards disagree
            return wire.join({**head, "shape": [[draw(st.integers(0, 9)), len(items) + 1]]}, body)
        if how == "huge":
            return honest + bytes(MAX_BYTES)
        if how == "bomb":  # a few hundred bytes that inflate far past the limit
            return wire.join(head, body + bytes(MAX_BYTES * 8), compress=True)
        if how == "flags":  # a flag a reward reply does not define, or one whose field is missing
            extra = draw(st.sampled_from([ZLIB, SPENT]))
            return bytes([honest[0], honest[1] | extra]) + honest[2:]
        request_id, methods = reply.request_id, None
        if how == "wrong_id":
            request_id += draw(st.text(min_size=1, max_size=3))
        elif how == "reward":  # beyond [0, 1] by more than half a grid step: it crosses as NaN
            step = 0.5 / 126  # nearer than this, a reward is sent as the grid point it rounds to
            outside = st.floats(allow_nan=True).filter(lambda r: not -step <= r <= 1.0 + step)
            outside |= st.integers(2, 10**30)
            items[k][draw(st.integers(0, len(items[k]) - 1))] = float(draw(outside))
        elif how == "length":
            extra = draw(st.lists(st.none() | st.floats(0, 1), min_size=1, max_size=3))
            items[k] = items[k][1:] if draw(st.booleans()) else items[k] + extra
        elif how == "extra_item":  # one item more than asked; the counts still add up
            items.append(items[k])
            counts["none"] += 1
        elif how == "counts":  # more items by answer and model than the reply has: "none" below 0
            answer = draw(st.integers(0, 9))
            model = draw(st.integers(max(0, len(items) + 1 - answer), 12))
            counts = {"answer": answer, "model": model, "none": 0}
        elif how == "per_item":
            methods = [draw(st.sampled_from(METHODS)) for _ in items]
            if method_counts(methods) == counts:
                methods[k] = "model" if methods[k] != "model" else "answer"
        scores = [ItemScores(str(n), r, None if methods is None else methods[n]) for n, r in enumerate(items)]
        return encode(RewardReply(request_id, self.name, scores, counts))


@fuzz(
    st.lists(st.sampled_from(["honest", "abstains", *BAD]), min_size=1, max_size=6),
    st.integers(1, 3),
    st.lists(st.text(max_size=20), min_size=3, max_size=3),
    st.data(),
    examples=100,
)
def test_a_reward_round_with_misbehaving_clients(roles: list[str], n: int, cands: list[str], data) -> None:
    clients: list[Any] = []
    for i, role in enumerate(roles):
        name = f"c{i}"
        if role in ("honest", "abstains"):
            clients.append(Client(name, EXAMPLES if role == "honest" else []))
        else:
            clients.append(Misbehaving(name, role, data))
    transport = InProcessTransport(clients, max_message_bytes=MAX_BYTES)
    server = FederatedAdvantage(transport, AllSelector(), len(clients), 3)
    questions = [Question(e.qid, e.domain, e.question) for e in EXAMPLES[:n]]
    advantages = server.advantages(questions, [list(cands)] * n)
    bad = sum(role in BAD for role in roles)
    summary = server.total.summary()
    assert summary["fed/rejected_total"] == bad, (roles, summary["fed/rejected"])
    assert all(math.isfinite(float(a)) for adv in advantages for a in adv)
    honest = sum(role == "honest" for role in roles)
    assert summary["fed/rewards_received"] >= honest * n * 3
    json.dumps(summary, allow_nan=False)


# -- many more examples, on request ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "prop, strategies", [pytest.param(*p, id=p[0].__name__) for p in PROPERTIES[__name__]]
)
def test_every_property_with_many_more_examples(prop: Callable[..., None], strategies: tuple) -> None:
    many_more(prop, strategies)
