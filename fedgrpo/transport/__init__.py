"""Transports carry encoded protocol messages between the server and clients."""

from fedgrpo.transport.base import Delivery, Transport
from fedgrpo.transport.inprocess import InProcessTransport
from fedgrpo.transport.messages import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
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
    "CompetenceItem",
    "CompetenceReply",
    "CompetenceRequest",
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
