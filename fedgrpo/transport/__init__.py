"""Transports carry protocol messages between the server and its clients (in-process here; Flower in
:mod:`fedgrpo.flower`)."""

from fedgrpo.transport.base import Delivery, Transport
from fedgrpo.transport.inprocess import InProcessTransport

__all__ = ["Delivery", "InProcessTransport", "Transport"]
