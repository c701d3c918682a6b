"""The transport seam: how the server reaches its clients.

The server hands a transport one protocol message per chosen client and gets back, per client, the
client's reply message or why there is none. Byte counts are the length of each message's one
encoding (:func:`fedgrpo.protocol.encode`), in both directions and on every transport, so the
in-process and the Flower transports are interchangeable and their numbers mean the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fedgrpo.protocol import Message

Failure = Literal["client_failed", "malformed_reply", "timeout"]


@dataclass(frozen=True)
class Delivery:
    """What came back from one client for one request: a decoded reply, or a failure and its reason."""

    client: str
    reply: Message | None
    bytes_down: int
    bytes_up: int
    failure: Failure | None = None  # timeout: the client counts as missing for this round
    error: str | None = None


class Transport(ABC):
    @property
    @abstractmethod
    def client_names(self) -> list[str]:
        """Names of the clients this transport can reach now."""

    @abstractmethod
    def exchange(self, requests: Mapping[str, Message]) -> dict[str, Delivery]:
        """Send ``requests[client]`` to each client and return one Delivery per client asked."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or processes."""

    def summary(self) -> dict:
        """What the transport itself measured (messages, timeouts, clients seen); saved with the results."""
        return {}
