"""Clients living in the server's process, reached only through encoded bytes."""

from __future__ import annotations

import logging
import time
from collections import Counter
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

    With ``rejoin_interval_s``, a client that raises is suspended as on the Flower transport: left out
    of :attr:`client_names` (so routing moves to the others) until that many seconds have passed;
    then it is offered again and its next request is its probe. A client that answers bad bytes is
    alive: it is not suspended, its replies are rejected.
    """

    def __init__(
        self,
        clients: list[BytesHandler],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        rejoin_interval_s: float | None = None,
    ) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        self._clients = {c.name: c for c in clients}
        self.max_message_bytes = max_message_bytes
        self.rejoin_interval_s = rejoin_interval_s
        self._suspended: dict[str, float] = {}  # client -> when it last failed
        self.counts: Counter = Counter()

    @property
    def client_names(self) -> list[str]:
        now = time.monotonic()
        for name, since in list(self._suspended.items()):
            if self.rejoin_interval_s is not None and now - since >= self.rejoin_interval_s:
                del self._suspended[name]  # offered again: its next request is the probe
                self.counts["clients_probed"] += 1
        return [n for n in self._clients if n not in self._suspended]

    def summary(self) -> dict:
        return {"suspended": sorted(self._suspended), **self.counts}

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
                if self.rejoin_interval_s is not None:
                    self._suspended[name] = time.monotonic()
                    self.counts["clients_suspended"] += 1
                out[name] = Delivery(
                    name, None, len(payload), 0, "client_failed", f"{type(err).__name__}: {err}"
                )
                continue
            if not isinstance(data, bytes):
                why = f"the client answered a {type(data).__name__}, not bytes"
                out[name] = Delivery(name, None, len(payload), 0, "malformed_reply", why)
                continue
            try:
                reply = decode(data, self.max_message_bytes, name)  # the sender is the client asked
                out[name] = Delivery(name, reply, len(payload), len(data))
            except ProtocolError as err:
                out[name] = Delivery(name, None, len(payload), len(data), "malformed_reply", str(err))
        return out
