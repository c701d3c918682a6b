"""Peers that speak another protocol version: refused with an error that names both versions.

A version 3 message (before the binary header) starts with a JSON header line ``{"v":3,...}``; a
version 4 one with the byte 4. :func:`mismatch` reads just enough of a payload that is not version 4
to say which version its peer speaks, and :func:`refusal` writes the error reply in the peer's own
(version 3) form, so that an old server shows a clear error instead of "malformed reply".
"""

from __future__ import annotations

import json

from fedgrpo.protocol.messages import ProtocolError, brief

JSON_HEADER = ord("{")  # a version 1-3 message: a JSON header line
MAX_BINARY_VERSION = 31  # a first byte beyond this (and not "{") is no FedGRPO message at all
MAX_HEADER_PEEK = 4096  # bytes of a v3 header line read to name its version


class VersionMismatch(ProtocolError):
    """A well-framed message of another protocol version; ``request_id``: the peer's, when it said one."""

    def __init__(self, peer: object, ours: int, request_id: str = "?") -> None:
        super().__init__(f"peer speaks FedGRPO protocol {brief(peer)}, this side speaks {ours}")
        self.peer = peer
        self.request_id = request_id


def mismatch(payload: bytes, ours: int) -> VersionMismatch:
    """Why ``payload`` (not of version ``ours``, at least one byte) is refused: the version its peer
    speaks; a ProtocolError when it is no FedGRPO message of any version."""
    if payload[0] != JSON_HEADER:
        if 0 < payload[0] <= MAX_BINARY_VERSION:  # a later binary version
            return VersionMismatch(payload[0], ours)
        raise ProtocolError(f"not a FedGRPO message (first byte {payload[0]:#04x})")
    line = payload[:MAX_HEADER_PEEK].partition(b"\n")[0]
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or "v" not in header:
        raise ProtocolError("neither a FedGRPO message header nor a protocol version")
    request_id = header.get("id")
    return VersionMismatch(header["v"], ours, request_id[:80] if isinstance(request_id, str) else "?")


def refusal(err: VersionMismatch, client: str) -> bytes:
    """A version 3 error reply to a version 3 request: the one form an old server reads."""
    header = {"v": 3, "kind": "error", "id": err.request_id, "client": client, "error": str(err)}
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n"
