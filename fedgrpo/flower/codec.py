"""Protocol messages <-> Flower ``RecordDict``: flat ``ConfigRecord``/``MetricRecord`` lists.

Flower carries records, not our JSON bytes, so each protocol message is laid out as flat, typed lists
(one entry per question or candidate) that Flower can inspect and size. The mapping is lossless: a
message turned into records and back is the same message, so byte counts on Flower are the length of
the protocol's one encoding, as in-process (the receiver reports the sizes it measured, and the
sender checks them).

A reward reply is three records: ``items`` (the item keys, and only with per-item methods their
``methods``), ``rewards`` (flat values with a presence flag and a count per item) and ``methods``
(items per evaluation method: ``answer``, ``model``, ``none``).

Anything that does not have exactly the expected records, keys and types raises
:class:`~fedgrpo.protocol.ProtocolError`; callers count and log it and go on. Receivers check
:func:`content_bytes` against their limit before calling :func:`from_records`.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedgrpo.protocol import (
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
    brief,
    check_method,
    encode,
    privacy_spent,
)

META, ITEMS, REWARDS, BITS, STATS, PROFILE = "meta", "items", "rewards", "bits", "stats", "profile"
METHOD_COUNTS = "methods"
PRIVACY = "privacy"  # optional: a private client's run-long (epsilon, delta) spend
REQUEST_TYPES = {"reward": "query.reward", "competence": "query.competence"}
PROFILE_TYPE = "query.profile"


def _record(content: RecordDict, name: str, kind: type) -> Any:
    if name not in content:
        raise ProtocolError(f"record {name!r} missing")
    record = content[name]
    if not isinstance(record, kind):
        raise ProtocolError(f"record {name!r} is a {type(record).__name__}, expected {kind.__name__}")
    return record


def _field(record: Any, key: str, kind: type | tuple[type, ...], items: type | None = None) -> Any:
    if key not in record:
        raise ProtocolError(f"field {key!r} missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"field {key!r} is {type(value).__name__}, expected {kind}")
    if items is not None and not all(isinstance(v, items) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"field {key!r} must hold only {items.__name__} values")
    # Flower carries 64-bit integers; a larger one is no record Flower sent (and would not encode)
    if any(isinstance(v, int) and abs(v) >= _INT64 for v in (value if isinstance(value, list) else [value])):
        raise ProtocolError(f"field {key!r} holds an integer outside 64 bits")
    return value


_INT64 = 2**63


def _split(flat: list[Any], counts: list[int], what: str) -> list[list[Any]]:
    if any(c < 0 for c in counts) or sum(counts) != len(flat):
        raise ProtocolError(f"{what}: counts {sum(counts)} do not add up to {len(flat)} values")
    out, start = [], 0
    for c in counts:
        out.append(list(flat[start : start + c]))
        start += c
    return out


def _meta(message: Message) -> ConfigRecord:
    return ConfigRecord(
        {
            "v": PROTOCOL_VERSION,
            "kind": message.kind,
            "request_id": message.request_id,
            "client": message.client,
        }
    )


def to_records(message: Message) -> RecordDict:
    """Lay a protocol message out as flat records (one list entry per item or candidate)."""
    records: dict[str, Any] = {META: _meta(message)}
    if isinstance(message, RewardRequest):
        records[ITEMS] = ConfigRecord(
            {
                "keys": [i.key for i in message.items],
                "questions": [i.question for i in message.items],
                "counts": [len(i.candidates) for i in message.items],
                "candidates": [c for i in message.items for c in i.candidates],
            }
        )
    elif isinstance(message, CompetenceRequest):
        records[ITEMS] = ConfigRecord(
            {
                "keys": [i.key for i in message.items],
                "questions": [i.question for i in message.items],
                "answers": [i.answer for i in message.items],
            }
        )
    elif isinstance(message, RewardReply):
        items: dict[str, Any] = {"keys": [i.key for i in message.items]}
        methods = [i.method for i in message.items]
        if any(m is not None for m in methods):
            if None in methods:
                raise ProtocolError("per-item methods must be on every item or on none")
            items["methods"] = methods
        records[ITEMS] = ConfigRecord(items)
        flat = [r for i in message.items for r in i.rewards]
        records[REWARDS] = MetricRecord(
            {
                "counts": [len(i.rewards) for i in message.items],
                "values": [0.0 if r is None else float(r) for r in flat],
                "present": [0 if r is None else 1 for r in flat],
            }
        )
        records[METHOD_COUNTS] = MetricRecord(dict(message.methods))
    elif isinstance(message, CompetenceReply):
        records[BITS] = MetricRecord({"bits": [int(b) for b in message.bits]})
    elif isinstance(message, ErrorReply):
        records[META]["error"] = message.error
    else:  # pragma: no cover - the union above is exhaustive
        raise TypeError(f"cannot lay out {type(message).__name__}")
    spent = getattr(message, "privacy_spent", None)
    if spent is not None:
        records[PRIVACY] = MetricRecord({"epsilon": float(spent[0]), "delta": float(spent[1])})
    return RecordDict(records)


def _privacy(content: RecordDict) -> tuple[float, float] | None:
    if PRIVACY not in content:
        return None
    record = _record(content, PRIVACY, MetricRecord)
    if set(record) != {"epsilon", "delta"}:
        raise ProtocolError("privacy record must hold exactly epsilon and delta")
    return privacy_spent([_field(record, k, (int, float)) for k in ("epsilon", "delta")])


def from_records(content: RecordDict) -> Message:
    """Rebuild a protocol message; wrong or missing records, keys or types raise ProtocolError."""
    meta = _record(content, META, ConfigRecord)
    if type(meta.get("v")) is not int or meta["v"] != PROTOCOL_VERSION:  # not 2.0, not True
        raise ProtocolError(f"protocol version {brief(meta.get('v'))}, expected {PROTOCOL_VERSION}")
    kind = _field(meta, "kind", str)
    request_id, client = _field(meta, "request_id", str), _field(meta, "client", str)
    if kind == "error":
        return ErrorReply(request_id, client, str(meta.get("error", "")))
    if kind == "reward":
        items = _record(content, ITEMS, ConfigRecord)
        keys, questions = _field(items, "keys", list, str), _field(items, "questions", list, str)
        counts = _field(items, "counts", list, int)
        groups = _split(_field(items, "candidates", list, str), counts, "candidates")
        if not len(keys) == len(questions) == len(groups):
            raise ProtocolError("reward request lists differ in length")
        return RewardRequest(
            request_id, client, [RewardItem(*t) for t in zip(keys, questions, groups, strict=True)]
        )
    if kind == "competence":
        items = _record(content, ITEMS, ConfigRecord)
        keys, questions = _field(items, "keys", list, str), _field(items, "questions", list, str)
        answers = _field(items, "answers", list, str)
        if not len(keys) == len(questions) == len(answers):
            raise ProtocolError("competence request lists differ in length")
        return CompetenceRequest(
            request_id, client, [CompetenceItem(*t) for t in zip(keys, questions, answers, strict=True)]
        )
    if kind == "reward_reply":
        return _reward_reply(content, request_id, client)
    if kind == "competence_reply":
        bits = _field(_record(content, BITS, MetricRecord), "bits", list, int)
        return CompetenceReply(request_id, client, list(bits), _privacy(content))
    raise ProtocolError(f"unknown message kind {brief(kind)}")


def _float(value: float) -> float:
    try:
        return float(value)
    except OverflowError as err:  # an int beyond any float (protobuf's int64 never is; a Python one can be)
        raise ProtocolError("reward is not a representable number") from err


def _reward_reply(content: RecordDict, request_id: str, client: str) -> RewardReply:
    items = _record(content, ITEMS, ConfigRecord)
    rewards = _record(content, REWARDS, MetricRecord)
    keys = _field(items, "keys", list, str)
    methods = [check_method(m) for m in _field(items, "methods", list, str)] if "methods" in items else None
    counts = _field(rewards, "counts", list, int)
    values = _field(rewards, "values", list, (int, float))
    present = _field(rewards, "present", list, int)
    per_item = [None] * len(keys) if methods is None else methods
    if len(values) != len(present) or not len(keys) == len(counts) == len(per_item):
        raise ProtocolError("reward reply lists differ in length")
    if any(p not in (0, 1) for p in present):
        raise ProtocolError("reward presence flags must be 0 or 1")
    flat = [_float(v) if p else None for v, p in zip(values, present, strict=True)]
    groups = _split(flat, counts, "rewards")
    scores = [ItemScores(*t) for t in zip(keys, groups, per_item, strict=True)]
    record = _record(content, METHOD_COUNTS, MetricRecord)
    tally = {m: _field(record, m, int) for m in record}
    if set(tally) != set(METHODS) or not all(0 <= n <= len(scores) for n in tally.values()):
        # bounded here, not only by the server's check: a count is at most the number of items
        raise ProtocolError(f"method counts must name {list(METHODS)}, each between 0 and {len(scores)}")
    return RewardReply(request_id, client, scores, tally, _privacy(content))


def content_bytes(content: RecordDict) -> int:
    """Rough payload size of a RecordDict (string bytes + 8 per number), checked before decoding.

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
                total += len(v.encode("utf-8", "surrogatepass")) if isinstance(v, str) else 8
    return total


def stats_record(request_bytes: int, reply_bytes: int, rejected: int) -> MetricRecord:
    """What the receiving client measured: the encoded size of the request it read and of its reply."""
    return MetricRecord({"request_bytes": request_bytes, "reply_bytes": reply_bytes, "rejected": rejected})


def read_stats(content: RecordDict) -> dict[str, int]:
    stats = _record(content, STATS, MetricRecord)
    return {k: int(_field(stats, k, int)) for k in ("request_bytes", "reply_bytes", "rejected")}


def reply_records(reply: Message, request_bytes: int, rejected: int) -> RecordDict:
    """A client's reply: the protocol message as records plus what it measured."""
    content = to_records(reply)
    content[STATS] = stats_record(request_bytes, len(encode(reply)), rejected)
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
    "REQUEST_TYPES",
    "content_bytes",
    "from_records",
    "read_stats",
    "reply_records",
    "to_records",
]
