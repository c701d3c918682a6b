"""Raw protocol bytes by hand, for tests that send what no honest encoder would (fedgrpo.protocol)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from fedgrpo.protocol import PROTOCOL_VERSION


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """A payload's header and its body, inflated (``z`` dropped) when it was compressed."""
    line, _, body = payload.partition(b"\n")
    header = json.loads(line)
    if header.pop("z", None) == 1:
        body = zlib.decompress(body)
    return header, body


def join(header: dict[str, Any], body: bytes = b"", compress: bool = False) -> bytes:
    """A payload from a header and a body (compressed, with ``z: 1``, when asked)."""
    if compress:
        header, body = {**header, "z": 1}, zlib.compress(body)
    return json.dumps(header, separators=(",", ":"), allow_nan=True).encode() + b"\n" + body


def header(kind: str, request_id: str = "r", client: str = "c", **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "kind": kind, "id": request_id, "client": client, **fields}
