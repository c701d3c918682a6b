"""Protocol messages <-> Flower ``RecordDict``: the protocol's one encoding, carried as one bytes value.

Flower carries records, so each protocol message travels as its encoded bytes
(:func:`fedgrpo.protocol.encode`: a binary header and a packed body) in the ``message``
ConfigRecord. The bytes on Flower are therefore the bytes in-process, byte for byte: every check is
the protocol's own, and the sizes both sides count are the lengths of those bytes (the receiver
reports the sizes it measured, and the sender checks them). A client's reply adds a ``stats``
MetricRecord with those sizes and what the ClientApp refused or could not serve while handling that
one message, by reason (``rejected.<reason>``, present only when not zero): the server sums them,
since a deployed ClientApp is a new process per message and could not keep a running total.

Anything that does not have exactly that record and value raises
:class:`~fedgrpo.protocol.ProtocolError`; callers count and log it and go on. Receivers check
:func:`content_bytes` against their limit before calling :func:`from_records`, which decodes with
the same limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedgrpo.protocol import MAX_MESSAGE_BYTES, Message, ProtocolError, decode, encode

MESSAGE, PAYLOAD, STATS, PROFILE = "message", "payload", "stats", "profile"
REQUEST_TYPES = {"reward": "query.reward", "competence": "query.competence"}
PROFILE_TYPE = "query.profile"
# What a ClientApp counts per message: a request it could not read, a node with no usable client,
# a client model (endpoint) that was down.
REJECT_REASONS = ("malformed_request", "unavailable", "model_unavailable")
_REJECTED = "rejected."
_INT64 = 2**63


def _record(content: RecordDict, name: str, kind: type) -> Any:
    if name not in content:
        raise ProtocolError(f"record {name!r} missing")
    record = content[name]
    if not isinstance(record, kind):
        raise ProtocolError(f"record {name!r} is a {type(record).__name__}, expected {kind.__name__}")
    return record


def _field(record: Any, key: str, kind: type) -> Any:
    if key not in record:
        raise ProtocolError(f"field {key!r} missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    # Flower carries 64-bit integers; a larger one is no record Flower sent (and would not encode)
    if isinstance(value, int) and abs(value) >= _INT64:
        raise ProtocolError(f"field {key!r} holds an integer outside 64 bits")
    return value


def to_records(message: Message) -> RecordDict:
    """The message's encoded bytes in a ``message`` ConfigRecord."""
    return RecordDict({MESSAGE: ConfigRecord({PAYLOAD: encode(message)})})


def read_payload(content: RecordDict) -> bytes:
    """The encoded message a RecordDict carries; raises ProtocolError when it carries none."""
    record = _record(content, MESSAGE, ConfigRecord)
    if set(record) != {PAYLOAD}:
        raise ProtocolError(f"record {MESSAGE!r} must hold only {PAYLOAD!r}")
    return _field(record, PAYLOAD, bytes)


def from_records(content: RecordDict, max_bytes: int = MAX_MESSAGE_BYTES, client: str = "") -> Message:
    """Decode the message a RecordDict carries (``client``: the one at the other end, which the channel
    knows and the bytes do not carry); anything malformed raises ProtocolError."""
    return decode(read_payload(content), max_bytes, client)


def content_bytes(content: RecordDict) -> int:
    """Rough payload size of a RecordDict (string and bytes lengths + 8 per number), checked before decoding.

    Cheap and independent of Flower's serialisation, so an oversized message is refused before any
    list is copied into protocol objects.
    """
    total = 0
    for record in content.values():
        if not isinstance(record, ConfigRecord | MetricRecord):
            total += 8
            continue
        for key, value in record.items():
            total += len(key)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, bytes | str):
                    total += len(v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v)
                else:
                    total += 8
    return total


def stats_record(request_bytes: int, reply_bytes: int, rejected: Mapping[str, int]) -> MetricRecord:
    """What the receiving client measured: the encoded size of the request it read and of its reply,
    and what it refused while handling this message (non-zero counts only: the wire stays small)."""
    record = MetricRecord({"request_bytes": request_bytes, "reply_bytes": reply_bytes})
    for reason, count in rejected.items():
        if reason not in REJECT_REASONS or count < 0:
            raise ValueError(f"not a rejection count: {reason!r}={count!r}")
        if count:
            record[_REJECTED + reason] = count
    return record


def _count(record: MetricRecord, key: str) -> int:
    value = _field(record, key, int)
    if value < 0:
        raise ProtocolError(f"field {key!r} is negative")
    return value


def read_stats(content: RecordDict) -> dict[str, Any]:
    """A reply's sizes and its ClientApp's rejections by reason; anything else raises ProtocolError."""
    stats = _record(content, STATS, MetricRecord)
    allowed = {"request_bytes", "reply_bytes", *(_REJECTED + r for r in REJECT_REASONS)}
    if unknown := sorted(set(stats) - allowed):
        raise ProtocolError(f"record {STATS!r} holds unknown fields {unknown}")
    rejected = {r: _count(stats, _REJECTED + r) for r in REJECT_REASONS if _REJECTED + r in stats}
    return {
        "request_bytes": _count(stats, "request_bytes"),
        "reply_bytes": _count(stats, "reply_bytes"),
        "rejected": rejected,
    }


def reply_records(
    reply: Message | bytes, request_bytes: int, rejected: Mapping[str, int] | None = None
) -> RecordDict:
    """A client's reply: the protocol message (or bytes already encoded: a refusal in an older
    peer's own form) as records, plus what it measured and refused for this message."""
    payload = reply if isinstance(reply, bytes) else encode(reply)
    content = RecordDict({MESSAGE: ConfigRecord({PAYLOAD: payload})})
    if isinstance(reply, bytes):  # an older server reads one ``rejected`` total, as it always did
        total = sum((rejected or {}).values())
        content[STATS] = MetricRecord(
            {"request_bytes": request_bytes, "reply_bytes": len(payload), "rejected": total}
        )
    else:
        content[STATS] = stats_record(request_bytes, len(payload), rejected or {})
    return content


def read_profile(content: RecordDict) -> dict[str, Any]:
    """A node's profile record; raises ProtocolError when it is not one."""
    if PROFILE not in content or not isinstance(content[PROFILE], ConfigRecord):
        raise ProtocolError("profile reply has no profile ConfigRecord")
    rec = content[PROFILE]
    name, domains, evaluates = rec.get("name", ""), rec.get("domains", []), rec.get("evaluates", [])
    if not isinstance(name, str):
        raise ProtocolError("profile name must be a string")
    if not isinstance(domains, list) or not isinstance(evaluates, list):
        raise ProtocolError("profile domains/evaluates must be lists")
    if error := rec.get("error"):
        raise ProtocolError(f"client {name!r} is unavailable: {error}")
    return {"name": name, "domains": list(domains), "evaluates": list(evaluates)}


__all__ = [
    "PROFILE_TYPE",
    "read_profile",
    "REJECT_REASONS",
    "REQUEST_TYPES",
    "content_bytes",
    "from_records",
    "read_payload",
    "read_stats",
    "reply_records",
    "to_records",
]
