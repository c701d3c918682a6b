"""The transport seam: how the server reaches its clients.

The server hands a transport one encoded request per chosen client and gets back, per client, either
reply bytes or a failure. Byte counts are measured on the encoded messages in both directions. The
trainer only ever sees this interface, so the in-process transport and a Flower transport are
interchangeable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """What came back from one client for one request."""

    client: str
    reply: bytes | None
    error: str | None
    bytes_down: int
    bytes_up: int
    seconds: float
    timed_out: bool = False  # no answer within the round's time limit: the client counts as missing


class Transport(ABC):
    @property
    @abstractmethod
    def client_names(self) -> list[str]:
        """Names of the clients this transport can reach."""

    @abstractmethod
    def exchange(self, requests: Mapping[str, bytes]) -> dict[str, Delivery]:
        """Send ``requests[client]`` to each client and return one Delivery per client asked."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or processes."""

    def summary(self) -> dict:
        """What the transport itself measured (messages, timeouts, clients seen); saved with the results."""
        return {}
