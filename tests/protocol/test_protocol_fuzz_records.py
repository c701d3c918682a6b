"""Property-based fuzzing of the Flower record codec: any RecordDict a ClientApp or the server reads
gives a protocol message or ProtocolError (bent payload bytes included), and a message goes into
records and back unchanged.

Records are drawn as plain specs ({name: ("config" | "metric", {key: value})}) and built into real
Flower records in each test, so that collection does not need Flower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import strategies as st  # noqa: E402

from fedgrpo.protocol import Message, ProtocolError, encode  # noqa: E402
from tests.fuzzing import PROPERTIES, fuzz, many_more, messages, mutate_payload, text  # noqa: E402

# -- Flower records -------------------------------------------------------------------------------------
RECORD_NAMES = ["message", "stats", "profile"]
RECORD_KEYS = [
    "payload",
    "request_bytes",
    "reply_bytes",
    "rejected",
    "rejected.unavailable",
    "name",
    "domains",
]
RECORD_KEYS += ["evaluates", "rejected.model_unavailable"]
# Flower's wire holds int64; records built in memory hold any Python int, so the codec must cope too
int64 = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**64, -(10**400), 10**5000])
small_ints = st.integers(-2, 4)
config_values = st.one_of(
    int64,
    st.floats(),
    text,
    st.binary(max_size=4),
    messages.map(encode),  # a whole message's bytes, where a payload belongs or not
    st.booleans(),
    st.lists(small_ints, max_size=4),
    st.lists(int64, max_size=3),
    st.lists(st.floats(), max_size=4),
    st.lists(text, max_size=4),
    st.lists(st.binary(max_size=3), max_size=2),
    st.lists(st.booleans(), max_size=3),
)
metric_values = st.one_of(
    int64, st.floats(), st.lists(small_ints, max_size=4), st.lists(int64, max_size=3), st.lists(st.floats())
)
record_keys = st.sampled_from(RECORD_KEYS) | text
record_specs = st.one_of(
    st.tuples(st.just("config"), st.dictionaries(record_keys, config_values, max_size=5)),
    st.tuples(st.just("metric"), st.dictionaries(record_keys, metric_values, max_size=5)),
)
content_specs = st.dictionaries(st.sampled_from(RECORD_NAMES) | text, record_specs, max_size=5)


def _content(spec: dict[str, tuple[str, dict[str, Any]]]) -> Any:
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    kinds = {"config": ConfigRecord, "metric": MetricRecord}
    return RecordDict({name: kinds[kind](dict(values)) for name, (kind, values) in spec.items()})


def _spec(content: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    from flwr.app import ConfigRecord

    return {n: ("config" if isinstance(r, ConfigRecord) else "metric", dict(r)) for n, r in content.items()}


def _records_or_refuses(content: Any) -> None:
    """from_records: a message or ProtocolError; a message lays out again as the same message."""
    from fedgrpo.flower.codec import content_bytes, from_records, read_stats, to_records

    assert content_bytes(content) >= 0
    with contextlib.suppress(ProtocolError):
        read_stats(content)
    try:
        message = from_records(content)
    except ProtocolError:
        return
    assert encode(from_records(to_records(message))) == encode(message)


@fuzz(content_specs, examples=80)
def test_from_records_on_arbitrary_records(spec: dict) -> None:
    pytest.importorskip("flwr")
    _records_or_refuses(_content(spec))


@fuzz(messages, st.data(), examples=100)
def test_from_records_on_mutated_records(message: Message, data: st.DataObject) -> None:
    pytest.importorskip("flwr")
    from fedgrpo.flower.codec import reply_records, to_records

    rejected = {"model_unavailable": data.draw(st.integers(0, 2))}
    spec = _spec(reply_records(message, 1, rejected) if data.draw(st.booleans()) else to_records(message))
    name = data.draw(st.sampled_from(sorted(spec)))
    kind, values = spec[name]
    key = data.draw(st.sampled_from(sorted(values)) | record_keys)
    if key == "payload" and isinstance(values.get(key), bytes) and data.draw(st.booleans()):
        values[key] = mutate_payload(data.draw, values[key])  # the bytes themselves bent
    elif key in values and data.draw(st.booleans()):
        values.pop(key)
    else:
        values[key] = data.draw(config_values if kind == "config" else metric_values)
    _records_or_refuses(_content(spec))


@fuzz(messages, examples=60)
def test_records_round_trip(message: Message) -> None:
    pytest.importorskip("flwr")
    from fedgrpo.flower.codec import from_records, to_records

    assert encode(from_records(to_records(message))) == encode(message)


# -- many more examples, on request ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "prop, strategies", [pytest.param(*p, id=p[0].__name__) for p in PROPERTIES[__name__]]
)
def test_every_property_with_many_more_examples(prop: Callable[..., None], strategies: tuple) -> None:
    many_more(prop, strategies)
