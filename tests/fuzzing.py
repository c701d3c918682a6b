"""What the property-based tests share: the ``fuzz`` decorator and strategies for protocol messages
and arbitrary JSON. Each fuzz module runs its properties with few examples by default and with
SLOW_EXAMPLES each in its ``slow``-marked test (:func:`many_more`)."""

from __future__ import annotations

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
rewards = st.none() | st.floats() | st.integers(min_value=-3, max_value=3)


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
    return RewardReply(draw(text), draw(text), items, method_counts(methods))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        RewardRequest, text, text, st.lists(st.builds(RewardItem, text, text, st.lists(text, max_size=3)))
    ),
    reward_replies(),
    st.builds(
        CompetenceRequest, text, text, st.lists(st.builds(CompetenceItem, text, text, text), max_size=3)
    ),
    st.builds(CompetenceReply, text, text, st.lists(st.integers(0, 1), max_size=4)),
    st.builds(ErrorReply, text, text, text),
)
headers = st.fixed_dictionaries(
    {
        "v": st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION - 1, float(PROTOCOL_VERSION), True]),
        "kind": st.sampled_from(["reward", "reward_reply", "competence", "competence_reply", "error", "x"]),
        "request_id": text,
        "client": text,
    },
    optional={"items": json_values, "methods": json_values, "bits": json_values, "error": json_values},
)


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
