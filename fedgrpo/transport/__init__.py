"""Transports carry encoded protocol messages between the server and clients."""

from fedgrpo.transport.base import Delivery, Transport
from fedgrpo.transport.inprocess import InProcessTransport
from fedgrpo.transport.messages import (
    ErrorReply,
    ItemScores,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
)

__all__ = [
    "Delivery",
    "ErrorReply",
    "InProcessTransport",
    "ItemScores",
    "ProtocolError",
    "RewardItem",
    "RewardReply",
    "RewardRequest",
    "Transport",
    "decode",
    "encode",
]
