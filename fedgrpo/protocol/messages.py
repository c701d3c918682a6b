"""The messages between the server and its clients, as plain dataclasses: what crosses, and no more.

Why each field is there (and why nothing else is) is in :mod:`fedgrpo.protocol`; the one encoding of
these messages is :mod:`fedgrpo.protocol.wire`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, get_args

Method = Literal["answer", "model", "none"]
METHODS: tuple[str, ...] = get_args(Method)


def new_request_id() -> str:
    """A fresh random id for one request: it only pairs a reply with its request. Random, not a
    counter or a name, so it tells a client nothing (not the round, not whether it is asked as a
    replacement, not how many others were asked)."""
    return secrets.token_hex(4)  # 4 raw bytes on the wire: enough to pair the replies of one round


class ProtocolError(ValueError):
    """Bytes that do not decode into a well-formed message."""


@dataclass(frozen=True)
class RewardItem:
    key: str  # not sent: items travel in request order, and a decoded item's key is its position
    question: str
    candidates: list[str]


@dataclass(frozen=True)
class RewardRequest:
    """One batch of questions with their candidates, for one client."""

    request_id: str
    client: str
    items: list[RewardItem]
    kind: str = field(default="reward", init=False)


@dataclass(frozen=True)
class ItemScores:
    key: str  # not sent: decoded, the position of the item it scores in the request
    rewards: list[float | None]
    method: Method | None = None  # only with federation.per_item_methods: it reveals what a client holds


@dataclass(frozen=True)
class RewardReply:
    """Per item its rewards (correctness in [0, 1]: the server adds the format reward); per reply how
    many items each method scored (``none``: abstained)."""

    request_id: str
    client: str
    items: list[ItemScores]
    methods: dict[str, int]
    privacy_spent: tuple[float, float] | None = None  # a private client's run-long (epsilon, delta)
    kind: str = field(default="reward_reply", init=False)


def method_counts(methods: list[Method]) -> dict[str, int]:
    """The aggregate a reward reply carries: items per method, every method named, in METHODS order."""
    tally = Counter(methods)
    return {m: tally[m] for m in METHODS}


def hidden_method_counts(items: int) -> dict[str, int]:
    """What a client with differential privacy sends instead of its method counts: the same for every
    reply of ``items`` items (all under ``none``), so it tells nothing about which questions the client
    holds. Its rewards are all present (free noise where it could not judge); a server reads a reply
    that carries a privacy spend as hidden, not as abstentions."""
    return {"answer": 0, "model": 0, "none": items}


@dataclass(frozen=True)
class ErrorReply:
    """A client that could not handle a request says why instead of crashing."""

    request_id: str
    client: str
    error: str
    kind: str = field(default="error", init=False)


@dataclass(frozen=True)
class CompetenceItem:
    key: str  # not sent, like a reward item's
    question: str
    answer: str


@dataclass(frozen=True)
class CompetenceRequest:
    """The server's auxiliary questions with their answers, for one client to try with its model."""

    request_id: str
    client: str
    items: list[CompetenceItem]
    kind: str = field(default="competence", init=False)


@dataclass(frozen=True)
class CompetenceReply:
    """One bit per requested item, in request order: 1 when the client model answered it correctly.

    The server checks the bits with :func:`check_competence_bits` (exact length, ints 0 or 1).
    """

    request_id: str
    client: str
    bits: list[int]
    privacy_spent: tuple[float, float] | None = None  # a private client's run-long (epsilon, delta)
    kind: str = field(default="competence_reply", init=False)


Message = RewardRequest | RewardReply | ErrorReply | CompetenceRequest | CompetenceReply


def brief(value: object) -> str:
    """A received value for an error message: short, and never the repr of a deep container."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int can itself fail
        return "a large int"
    if isinstance(value, str | int | float | None):
        return repr(value)[:40]
    return f"a {type(value).__name__}"
