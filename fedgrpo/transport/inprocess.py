"""Clients living in the server's process, reached only through encoded bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from fedgrpo.transport.base import Delivery, Transport

log = logging.getLogger(__name__)


class BytesHandler(Protocol):
    name: str

    def handle(self, request: bytes) -> bytes: ...


class InProcessTransport(Transport):
    """Calls each client's ``handle(bytes) -> bytes``; exceptions become failed deliveries."""

    def __init__(self, clients: list[BytesHandler]) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        self._clients = {c.name: c for c in clients}

    @property
    def client_names(self) -> list[str]:
        return list(self._clients)

    def exchange(self, requests: Mapping[str, bytes]) -> dict[str, Delivery]:
        out: dict[str, Delivery] = {}
        for name, payload in requests.items():
            start = time.perf_counter()
            client = self._clients.get(name)
            if client is None:
                out[name] = Delivery(name, None, f"unknown client {name!r}", len(payload), 0, 0.0)
                continue
            try:
                reply = client.handle(payload)
                out[name] = Delivery(name, reply, None, len(payload), len(reply), time.perf_counter() - start)
            except Exception as err:  # a failing client must not take the server down
                log.warning("client %s failed: %s", name, err)
                out[name] = Delivery(
                    name, None, f"{type(err).__name__}: {err}", len(payload), 0, time.perf_counter() - start
                )
        return out
