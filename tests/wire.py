"""Raw protocol bytes by hand, for tests that send what no honest encoder would (fedgrpo.protocol).

A header is a dict: ``v``, ``kind``, ``id`` and the kind's fields (``methods`` [answer, model],
``shape`` [[rewards per item, items], ...], ``item_methods`` codes, ``n``, ``privacy_spent``), plus
``flags`` to set any extra flag bits by hand.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from fedgrpo.protocol import PROTOCOL_VERSION
from fedgrpo.protocol.framing import Reader, two_floats, varint
from fedgrpo.protocol.wire import ITEM_METHODS, KINDS, RUNS, SHORT_ID, SPENT, ZLIB


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """A payload's header and its body, inflated when it was compressed."""
    head, at = _read(payload)
    body = zlib.decompress(payload[at:]) if payload[1] & ZLIB else payload[at:]
    if "per_item" in head:
        per_item = head.pop("per_item")
        head["shape"] = [[per_item, len(body) // per_item]] if per_item else []
    return head, body


def parts(payload: bytes) -> tuple[bytes, bytes]:
    """A payload's header bytes and its body bytes as sent (compressed or not)."""
    at = _read(payload)[1]
    return payload[:at], payload[at:]


def _read(payload: bytes) -> tuple[dict[str, Any], int]:
    reader = Reader(payload, 2)
    flags = payload[1]
    head: dict[str, Any] = {"v": payload[0], "kind": KINDS[flags & 7]}
    head["id"] = reader.take(4).hex() if flags & SHORT_ID else reader.take(reader.varint()).decode()
    if head["kind"] == "reward_reply":
        head["methods"] = [reader.varint(), reader.varint()]
        if flags & RUNS:
            head["shape"] = [[reader.varint(), reader.varint()] for _ in range(reader.varint())]
        else:
            head["per_item"] = reader.varint()  # the items follow from the body (see split)
        if flags & ITEM_METHODS:
            head["item_methods"] = list(reader.take(sum(r for _, r in head["shape"])))
    if head["kind"] == "competence_reply":
        head["n"] = reader.varint()
    if flags & SPENT:
        head["privacy_spent"] = list(reader.two_floats())
    return head, reader.at


def join(head: dict[str, Any], body: bytes = b"", compress: bool = False) -> bytes:
    """A payload from a header and a body (compressed when asked); nothing is checked."""
    kind = KINDS.index(head["kind"]) if head["kind"] in KINDS else head["kind"]
    flags = head.get("flags", 0) | (ZLIB if compress else 0)
    raw_id = head["id"].encode()
    fields = varint(len(raw_id)) + raw_id
    if "methods" in head:
        fields += b"".join(varint(n) for n in head["methods"])
    if "shape" in head:  # uniform when the body holds exactly its rewards, else run-length pairs
        shape = head["shape"]
        if (
            len(shape) == 1
            and shape[0][0]
            and shape[0][0] * shape[0][1] == len(body)
            and "item_methods" not in head
        ):
            fields += varint(shape[0][0])
        else:
            flags |= RUNS
            fields += varint(len(shape)) + b"".join(varint(c) + varint(r) for c, r in shape)
    if "item_methods" in head:
        flags |= ITEM_METHODS
        fields += bytes(head["item_methods"])
    if "n" in head:
        fields += varint(head["n"])
    if "privacy_spent" in head:
        flags |= SPENT
        fields += two_floats(tuple(head["privacy_spent"]))
    return (
        bytes([head.get("v", PROTOCOL_VERSION), kind | flags])
        + fields
        + (zlib.compress(body) if compress else body)
    )


def header(kind: str, request_id: str = "r", **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "kind": kind, "id": request_id, **fields}


def v3(kind: str, request_id: str = "r", client: str = "c", **fields: Any) -> bytes:
    """A protocol version 3 message (a JSON header line), as an old peer sends it."""
    head = {"v": 3, "kind": kind, "id": request_id, "client": client, **fields}
    return json.dumps(head, separators=(",", ":")).encode() + b"\n"
