"""The wire protocol between the server and its clients: messages, their one encoding, every check.

Requests and replies are plain dataclasses with one encoding (compact JSON bytes); byte counts are
the length of that encoding on every transport. A reply is always decoded and checked here before
the server trusts it, for reward rounds and competence queries alike. What goes down: question ids,
question texts and candidate completions. What comes up: one reward per candidate (or None) and the
evaluation method used.

Competence queries (building the confidence graph) send the server's own auxiliary questions with
their answers down (the auxiliary set is the server's, so this discloses nothing private) and bring
one bit per question up: did the client's model answer it correctly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

PROTOCOL_VERSION = 1
Method = Literal["answer", "model", "none"]
METHODS: tuple[str, ...] = get_args(Method)


class ProtocolError(ValueError):
    """Bytes that do not decode into a well-formed message."""


@dataclass(frozen=True)
class RewardItem:
    qid: str
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
    qid: str
    rewards: list[float | None]
    method: Method


@dataclass(frozen=True)
class RewardReply:
    request_id: str
    client: str
    items: list[ItemScores]
    kind: str = field(default="reward_reply", init=False)


@dataclass(frozen=True)
class ErrorReply:
    """A client that could not handle a request says why instead of crashing."""

    request_id: str
    client: str
    error: str
    kind: str = field(default="error", init=False)


@dataclass(frozen=True)
class CompetenceItem:
    qid: str
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

    ``decode`` only checks that ``bits`` is a list; the server checks the bits themselves with
    :func:`check_competence_bits` (exact length, ints 0 or 1).
    """

    request_id: str
    client: str
    bits: list[int]
    kind: str = field(default="competence_reply", init=False)


Message = RewardRequest | RewardReply | ErrorReply | CompetenceRequest | CompetenceReply


def encode(message: Message) -> bytes:
    body = asdict(message)
    body["v"] = PROTOCOL_VERSION
    # NaN/inf are allowed on the wire on purpose: the receiver rejects them with a counted error.
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode("utf-8")


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body or not isinstance(body[key], kind):
        raise ProtocolError(f"field {key!r} missing or not {kind}")
    return body[key]


def decode(payload: bytes) -> Message:
    """Parse bytes into a message; anything malformed raises ProtocolError, never something else."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"not a JSON message: {err}") from err
    if not isinstance(body, dict):
        raise ProtocolError("message is not a JSON object")
    if body.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {body.get('v')!r}, expected {PROTOCOL_VERSION}")
    kind = body.get("kind")
    request_id = _require(body, "request_id", str)
    client = _require(body, "client", str)
    if kind == "reward":
        items = []
        for raw in _require(body, "items", list):
            if not isinstance(raw, dict):
                raise ProtocolError("request item is not an object")
            cands = _require(raw, "candidates", list)
            if not all(isinstance(c, str) for c in cands):
                raise ProtocolError("candidates must be strings")
            items.append(RewardItem(_require(raw, "qid", str), _require(raw, "question", str), cands))
        return RewardRequest(request_id, client, items)
    if kind == "reward_reply":
        scores = []
        for raw in _require(body, "items", list):
            if not isinstance(raw, dict):
                raise ProtocolError("reply item is not an object")
            rewards = _require(raw, "rewards", list)
            if not all(
                r is None or (isinstance(r, int | float) and not isinstance(r, bool)) for r in rewards
            ):
                raise ProtocolError("rewards must be numbers or null")
            method = check_method(raw.get("method"))
            scores.append(
                ItemScores(
                    _require(raw, "qid", str), [None if r is None else float(r) for r in rewards], method
                )
            )
        return RewardReply(request_id, client, scores)
    if kind == "competence":
        citems = []
        for raw in _require(body, "items", list):
            if not isinstance(raw, dict):
                raise ProtocolError("competence item is not an object")
            citems.append(
                CompetenceItem(
                    _require(raw, "qid", str), _require(raw, "question", str), _require(raw, "answer", str)
                )
            )
        return CompetenceRequest(request_id, client, citems)
    if kind == "competence_reply":
        return CompetenceReply(request_id, client, list(_require(body, "bits", list)))
    if kind == "error":
        return ErrorReply(request_id, client, str(body.get("error", "")))
    raise ProtocolError(f"unknown message kind {kind!r}")


# -- checks the server applies to every reply ----------------------------------------------------------
class Rejected(Exception):
    """A reply (or one item of it) the server does not accept; ``reason`` is the counted category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_method(method: object) -> Method:
    if method not in METHODS:
        raise ProtocolError(f"unknown evaluation method {method!r}")
    return method  # type: ignore[return-value]


def check_reply(reply: Message, expected: type, client: str, request_id: str) -> Message:
    """The reply itself: not an error reply, of the expected kind, from the client and request asked."""
    if isinstance(reply, ErrorReply):
        raise Rejected("client_error", reply.error)
    if not isinstance(reply, expected):
        raise Rejected("malformed_reply", f"expected a {expected.__name__}, got {reply.kind!r}")
    if reply.client != client or reply.request_id != request_id:
        raise Rejected(
            "unasked_client", f"reply names client {reply.client!r} / request {reply.request_id!r}"
        )
    return reply


def check_reward_item(item: ItemScores, expected_len: int | None, seen: set[str]) -> list[float | None]:
    """One reply item: asked for, not repeated, one finite reward per candidate."""
    if expected_len is None or item.qid in seen:
        raise Rejected("unknown_question", f"reply for unknown or repeated item {item.qid!r}")
    seen.add(item.qid)
    if len(item.rewards) != expected_len:
        raise Rejected("wrong_length", f"{len(item.rewards)} rewards for {expected_len} candidates")
    if any(r is not None and not math.isfinite(r) for r in item.rewards):
        raise Rejected("non_finite", f"NaN or infinite reward for {item.qid!r}")
    return item.rewards


def check_competence_bits(bits: object, expected_len: int) -> list[int]:
    """A competence reply's bits: a list of exactly ``expected_len`` ints, each 0 or 1.

    Replies come over the network from clients we do not control, so nothing is coerced: bools,
    floats (even 1.0), strings and None are rejected rather than silently read as bits.
    """
    if not isinstance(bits, list):
        raise Rejected(
            "invalid_bits", f"competence reply must be a list of 0/1 ints, got {type(bits).__name__}"
        )
    if len(bits) != expected_len:
        raise Rejected("invalid_bits", f"competence reply has {len(bits)} entries, expected {expected_len}")
    for i, bit in enumerate(bits):
        # type() is exact on purpose: bool is a subclass of int and must not pass.
        if type(bit) is not int or bit not in (0, 1):
            raise Rejected("invalid_bits", f"competence reply entry {i} must be the int 0 or 1, got {bit!r}")
    return list(bits)
