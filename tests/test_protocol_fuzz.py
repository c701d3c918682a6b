"""Property-based fuzzing of everything that reads what a client sent.

Each property holds for any input: decoding raises ProtocolError or yields a message, every check
raises Rejected or passes a well-formed value, and a whole reward round with misbehaving clients
never raises, counts one rejection per bad client and returns finite advantages. The default run
keeps the example counts small (a few seconds in all); ``-m slow`` runs each with many more.
Flower records: tests/test_protocol_fuzz_records.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import strategies as st  # noqa: E402

from fedgrpo.client import Client  # noqa: E402
from fedgrpo.data import Question, generate  # noqa: E402
from fedgrpo.protocol import (  # noqa: E402
    METHODS,
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
)
from fedgrpo.selection import AllSelector  # noqa: E402
from fedgrpo.server import FederatedAdvantage  # noqa: E402
from fedgrpo.transport import InProcessTransport  # noqa: E402
from tests.fuzzing import (  # noqa: E402
    PROPERTIES,
    decodes_or_refuses,
    fuzz,
    headers,
    json_values,
    many_more,
    messages,
    mutate,
    reward_replies,
    rewards,
    text,
)


# -- decode ---------------------------------------------------------------------------------------------
@fuzz(st.binary(max_size=200), examples=60)
def test_decode_arbitrary_bytes(payload: bytes) -> None:
    decodes_or_refuses(payload)
    decodes_or_refuses(b'{"v":2,"kind":"reward_reply",' + payload)


@fuzz(json_values | headers, examples=80)
def test_decode_arbitrary_json(value: Any) -> None:
    decodes_or_refuses(json.dumps(value, allow_nan=True).encode())


@fuzz(messages, examples=60)
def test_valid_messages_round_trip(message: Message) -> None:
    assert encode(decode(encode(message))) == encode(message)


@fuzz(reward_replies() | messages, st.data(), examples=200)  # reward replies: what the server parses most
def test_decode_mutated_messages(message: Message, data: st.DataObject) -> None:
    body = mutate(data.draw, json.loads(encode(message)))
    decodes_or_refuses(json.dumps(body, allow_nan=True).encode())


# -- the server's checks --------------------------------------------------------------------------------
@fuzz(messages, st.sampled_from([RewardReply, CompetenceReply]), text, text, examples=60)
def test_check_reply_on_any_message(message: Message, expected: type, client: str, request_id: str) -> None:
    try:
        checked = check_reply(message, expected, client, request_id)
    except Rejected as err:
        assert err.reason in {"client_error", "malformed_reply", "unasked_client"}
        return
    assert isinstance(checked, expected) and (checked.client, checked.request_id) == (client, request_id)


@fuzz(st.lists(rewards, max_size=5), st.none() | st.integers(0, 5), st.floats(0, 3), examples=80)
def test_check_reward_item_on_any_rewards(values: list, expected: int | None, bound: float) -> None:
    item = ItemScores("k", [None if r is None else float(r) for r in values])
    try:
        got = check_reward_item(item, expected, set(), bound)
    except Rejected as err:
        assert err.reason in {"unknown_question", "wrong_length", "non_finite", "out_of_range"}
        return
    assert len(got) == expected and all(r is None or 0.0 <= r <= bound for r in got)


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
BAD += ["unknown_key", "repeat", "counts", "per_item", "huge"]
EXAMPLES = generate("sums_1digit", 8, seed=5)


class Misbehaving:
    """Answers each request with an honest reply bent in exactly one way (``how``), drawn per request."""

    def __init__(self, name: str, how: str, data: st.DataObject) -> None:
        self.name, self.how, self.data = name, how, data
        self._honest = Client(name, EXAMPLES)

    def handle(self, payload: bytes) -> Any:
        draw, how = self.data.draw, self.how
        body = json.loads(self._honest.handle(payload))
        items = body["items"]
        k = draw(st.integers(0, len(items) - 1))
        if how == "bytes":
            return draw(st.binary(max_size=100))
        if how == "json":
            return json.dumps(draw(json_values), allow_nan=True).encode()
        if how == "not_bytes":
            return draw(st.none() | st.text(max_size=5) | st.just(bytearray(b"{}")))
        if how == "raises":
            raise draw(st.sampled_from([RuntimeError("boom"), MemoryError(), KeyError("x")]))
        if how == "error":
            return encode(ErrorReply(body["request_id"], self.name, draw(text)))
        if how == "wrong_id":
            body[draw(st.sampled_from(["request_id", "client"]))] += draw(st.text(min_size=1, max_size=3))
        elif how == "wrong_kind":
            return encode(CompetenceReply(body["request_id"], self.name, [1]))
        elif how == "reward":
            outside = st.floats(allow_nan=True).filter(lambda r: not 0.0 <= r <= 1.1) | st.integers(2, 10**30)
            items[k]["rewards"][draw(st.integers(0, len(items[k]["rewards"]) - 1))] = draw(outside)
        elif how == "length":
            extra = draw(st.lists(st.none() | st.floats(0, 1), min_size=1, max_size=3))
            items[k]["rewards"] = (
                items[k]["rewards"][1:] if draw(st.booleans()) else items[k]["rewards"] + extra
            )
        elif how == "unknown_key":
            items[k]["key"] = "x" + items[k]["key"] + draw(text)
        elif how == "repeat":
            items.append(items[k])
            body["methods"]["none"] += 1  # counts still add up: the repeated item itself is what is wrong
        elif how == "counts":  # counts that add up differently would pass: only metrics could be lied to

            def wrong(c: dict[str, int]) -> bool:
                return set(c) != set(METHODS) or min(c.values()) < 0 or sum(c.values()) != len(items)

            counts = st.dictionaries(st.sampled_from([*METHODS, "x"]), st.integers(-1, 9))
            body["methods"] = draw(counts.filter(wrong))
        elif how == "per_item":
            for item in items:
                item["method"] = draw(st.sampled_from(METHODS))
            if method_counts([i["method"] for i in items]) == body["methods"]:
                items[k]["method"] = "model" if items[k]["method"] != "model" else "answer"
        elif how == "huge":
            items[k]["key"] += " " * MAX_BYTES
        return json.dumps(body, allow_nan=True).encode()


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
