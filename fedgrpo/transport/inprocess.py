"""Clients living in the server's process, reached only through encoded bytes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from fedgrpo.protocol import MAX_MESSAGE_BYTES, Message, ProtocolError, decode, encode
from fedgrpo.transport.base import Delivery, Transport

log = logging.getLogger(__name__)


class BytesHandler(Protocol):
    name: str

    def handle(self, request: bytes) -> bytes: ...


class InProcessTransport(Transport):
    """Encodes each request, calls the client's ``handle(bytes) -> bytes``, decodes the reply.

    A client that raises or answers bytes that do not decode is a failed delivery, never a crash; a
    reply longer than ``max_message_bytes`` is refused unread, as on any other transport.
    """

    def __init__(self, clients: list[BytesHandler], max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        self._clients = {c.name: c for c in clients}
        self.max_message_bytes = max_message_bytes

    @property
    def client_names(self) -> list[str]:
        return list(self._clients)

    def exchange(self, requests: Mapping[str, Message]) -> dict[str, Delivery]:
        out: dict[str, Delivery] = {}
        for name, request in requests.items():
            payload = encode(request)
            client = self._clients.get(name)
            if client is None:
                out[name] = Delivery(name, None, len(payload), 0, "client_failed", f"unknown client {name!r}")
                continue
            try:
                data = client.handle(payload)
            except Exception as err:  # a failing client must not take the server down
                log.warning("client %s failed: %s", name, err)
                out[name] = Delivery(
                    name, None, len(payload), 0, "client_failed", f"{type(err).__name__}: {err}"
                )
                continue
            if not isinstance(data, bytes):
                why = f"the client answered a {type(data).__name__}, not bytes"
                out[name] = Delivery(name, None, len(payload), 0, "malformed_reply", why)
                continue
            try:
                out[name] = Delivery(name, decode(data, self.max_message_bytes), len(payload), len(data))
            except ProtocolError as err:
                out[name] = Delivery(name, None, len(payload), len(data), "malformed_reply", str(err))
        return out
