"""The wire protocol between the server and its clients.

Requests and replies are plain dataclasses encoded as JSON bytes. Every transport (in-process now,
Flower later) carries exactly these bytes, so byte counts are real and a reply is always parsed and
checked before the server trusts it. What goes down: question ids, question texts and candidate
completions. What comes up: one reward per candidate (or None) and the evaluation method used.

Competence queries (building the confidence graph) send the server's own auxiliary questions with
their answers down (the auxiliary set is the server's, so this discloses nothing private) and bring
one bit per question up: did the client's model answer it correctly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PROTOCOL_VERSION = 1
Method = Literal["answer", "model", "none"]


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
    :func:`fedgrpo.selection.validate_competence_reply` (exact length, ints 0 or 1).
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
            method = raw.get("method")
            if method not in ("answer", "model", "none"):
                raise ProtocolError(f"unknown evaluation method {method!r}")
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
