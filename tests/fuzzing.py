"""What the property-based tests share: the ``fuzz`` decorator and strategies for protocol messages
and arbitrary JSON. Each fuzz module runs its properties with few examples by default and with
SLOW_EXAMPLES each in its ``slow``-marked test (:func:`many_more`)."""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fedgrpo.protocol import (  # noqa: E402
    METHODS,
    PROTOCOL_VERSION,
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ItemScores,
    Message,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
    method_counts,
)
from tests import wire  # noqa: E402

Property = tuple[Callable[..., None], tuple[Any, ...]]
PROPERTIES: dict[str, list[Property]] = defaultdict(list)  # test module -> its properties
SLOW_EXAMPLES = 4000


def fuzz(*strategies: Any, examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``given(*strategies)`` with ``examples`` cases (no deadline, no example database); the same
    property runs again with SLOW_EXAMPLES cases under ``-m slow``."""

    def wrap(prop: Callable[..., None]) -> Callable[..., None]:
        PROPERTIES[prop.__module__].append((prop, strategies))
        return _settings(examples)(given(*strategies)(prop))

    return wrap


def many_more(prop: Callable[..., None], strategies: tuple[Any, ...]) -> None:
    """Run one property with SLOW_EXAMPLES cases."""
    _settings(SLOW_EXAMPLES)(given(*strategies)(prop))()


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- strategies -----------------------------------------------------------------------------------------
text = st.text(max_size=12)
# numbers at the edges of what JSON, Python floats and int64 hold, drawn far more often than by chance
edge_numbers = st.sampled_from([10**400, -(10**400), 2**63, 2**64, -1, 1.7e308, float("inf"), float("nan")])
json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | edge_numbers | st.text(max_size=8)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
replacements = edge_numbers | json_leaves | json_values  # what a mutation puts in: edges and leaves first
answer_rewards = st.sampled_from([0.0, 1.0, 0.5, 1 / 126, 125 / 126])  # on the grid: sent exactly
rewards = st.none() | answer_rewards | st.floats() | st.integers(min_value=-3, max_value=3)
request_ids = text | st.binary(min_size=4, max_size=4).map(bytes.hex)  # new_request_id's: 4 raw bytes


@st.composite
def reward_replies(draw: st.DrawFn) -> RewardReply:
    methods = draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=4) | st.just([]))
    per_item = draw(st.booleans())
    items = [
        ItemScores(
            draw(text), [None if r is None else float(r) for r in draw(st.lists(rewards, max_size=4))], m
        )
        for m in (methods if per_item else [None] * len(methods))
    ]
    spent = draw(st.none() | st.tuples(st.floats(0, 50), st.floats(0, 0.5)))
    return RewardReply(draw(request_ids), "", items, method_counts(methods), spent)


# decoded messages name their client "" (the name does not travel: the receiver fills it in)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        RewardRequest,
        request_ids,
        st.just(""),
        st.lists(st.builds(RewardItem, text, text, st.lists(text, max_size=3))),
    ),
    reward_replies(),
    st.builds(
        CompetenceRequest,
        request_ids,
        st.just(""),
        st.lists(st.builds(CompetenceItem, text, text, text), max_size=3),
    ),
    st.builds(CompetenceReply, request_ids, st.just(""), st.lists(st.integers(0, 1), max_size=4)),
    st.builds(ErrorReply, request_ids, st.just(""), text),
)
# a binary header: a version byte (mostly ours), kind and flags, then any bytes for the id and fields
headers = st.builds(
    lambda v, kind, rest: bytes([v, kind]) + rest,
    st.sampled_from([PROTOCOL_VERSION] * 4 + [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 0, ord("{")]),
    st.integers(0, 255),
    st.binary(max_size=24),
)
bodies = st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())


def join(header: Any, body: bytes) -> bytes:
    """A JSON header line (any JSON value) and a body, as protocol 3 laid them out."""
    return json.dumps(header, separators=(",", ":"), allow_nan=True).encode() + b"\n" + body


def decodes_or_refuses(payload: bytes) -> Message | None:
    """The property every receiver relies on: a message, or ProtocolError; and a decoded message
    encodes to bytes that decode to the same bytes again (nothing half-read)."""
    try:
        message = decode(payload)
    except ProtocolError:
        return None
    again = encode(message)
    assert encode(decode(again)) == again
    return message


def paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree (the root, each container entry, each leaf), as key/index paths."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [path] + [p for k, child in children for p in paths(child, (*path, k))]


def mutate(draw: st.DrawFn, body: Any) -> Any:
    """``body`` with one place in it (a reward, a key, a count, a whole list...) replaced by an
    arbitrary JSON value, or dropped from its object. Deepest places first: hypothesis favours the
    first choices, and the deep ones are where a parser is most likely to trust what it reads."""
    path = draw(st.sampled_from(sorted(paths(body)[1:], key=len, reverse=True) or [()]))
    if not path:
        return draw(json_values)
    parent = body
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and draw(st.integers(0, 4)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(replacements)
    return body


def mutate_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` cut short, grown, or with one byte changed."""
    how = draw(st.sampled_from(["cut", "grow", "flip"]))
    if how == "cut" or not body and how == "flip":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if how == "grow":
        return body + draw(st.binary(min_size=1, max_size=4))
    at = draw(st.integers(0, len(body) - 1))
    return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]


def mutate_payload(draw: st.DrawFn, payload: bytes) -> bytes:
    """An encoded message bent in one place: its binary header, its JSON body, or its raw body
    (inflated first when compressed, and compressed again or not)."""
    head, body = wire.parts(payload)
    if payload[1] & wire.ZLIB:
        body = zlib.decompress(body)
    head = bytes([head[0], head[1] & ~wire.ZLIB]) + head[2:]
    if draw(st.booleans()):
        head = mutate_bytes(draw, head)
    else:
        try:
            body = json.dumps(mutate(draw, json.loads(body)), allow_nan=True).encode()
        except ValueError:  # a packed body: bytes, not JSON
            body = mutate_bytes(draw, body)
    if len(head) > 1 and draw(st.booleans()):
        head, body = bytes([head[0], head[1] | wire.ZLIB]) + head[2:], zlib.compress(body)
    return head + body
