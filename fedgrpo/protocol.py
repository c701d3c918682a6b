"""The wire protocol between the server and its clients: messages, their one encoding, every check.

Requests and replies are plain dataclasses with one encoding (compact JSON bytes); byte counts are
the length of that encoding on every transport. A reply is always decoded and checked here before
the server trusts it, for reward rounds and competence queries alike.

Nothing crosses that the protocol does not need. Down: per item an opaque ``key`` (chosen by the
server for this request only: it says nothing about the question, its id or its domain), the
question text and the candidate completions. Up: per item its key and one reward per candidate (or
None: the client cannot judge it), and per reply how many items were scored by answer, by model or
not at all (``methods``, aggregate counts for ``fed/methods`` and ``fed/abstentions``). Which item a
client could score by its own answers would tell the server which questions it holds, so the
per-item ``method`` is sent only when the run's operator asks for it
(``federation.per_item_methods``, for debugging).

Request ids are random (:func:`new_request_id`): they pair a reply with its request and say nothing
else (not the round, not whether a client is asked as a replacement).

Competence queries (building the confidence graph) send the server's own auxiliary questions with
their answers down (the auxiliary set is the server's, so this discloses nothing private), keyed
like reward items, and bring one bit per question up: did the client's model answer it correctly.

Every receiver refuses a payload longer than its limit (default :data:`MAX_MESSAGE_BYTES`) before
parsing it, and every reward must lie in the range the server declared (``[0, 1 + format_reward]``).
"""

from __future__ import annotations

import json
import math
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

PROTOCOL_VERSION = 2  # 2: opaque item keys, aggregate method counts, optional per-item methods
MAX_MESSAGE_BYTES = 64 * 2**20  # the default receiving limit, on every transport
Method = Literal["answer", "model", "none"]
METHODS: tuple[str, ...] = get_args(Method)


def new_request_id() -> str:
    """A fresh random id for one request: it only pairs a reply with its request. Random, not a
    counter or a name, so it tells a client nothing (not the round, not whether it is asked as a
    replacement, not how many others were asked)."""
    return secrets.token_hex(8)


class ProtocolError(ValueError):
    """Bytes that do not decode into a well-formed message."""


@dataclass(frozen=True)
class RewardItem:
    key: str  # opaque, per request: the server maps it back to its question
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
    key: str
    rewards: list[float | None]
    method: Method | None = None  # only with federation.per_item_methods: it reveals what a client holds


@dataclass(frozen=True)
class RewardReply:
    """Per item its rewards; per reply how many items each method scored (``none``: abstained)."""

    request_id: str
    client: str
    items: list[ItemScores]
    methods: dict[str, int]
    kind: str = field(default="reward_reply", init=False)


def method_counts(methods: list[Method]) -> dict[str, int]:
    """The aggregate a reward reply carries: items per method, every method named, in METHODS order."""
    tally = Counter(methods)
    return {m: tally[m] for m in METHODS}


@dataclass(frozen=True)
class ErrorReply:
    """A client that could not handle a request says why instead of crashing."""

    request_id: str
    client: str
    error: str
    kind: str = field(default="error", init=False)


@dataclass(frozen=True)
class CompetenceItem:
    key: str  # opaque, like a reward item's
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
    if isinstance(message, RewardReply):  # an absent per-item method is absent on the wire, not null
        for item in body["items"]:
            if item["method"] is None:
                del item["method"]
    # NaN/inf are allowed on the wire on purpose: the receiver rejects them with a counted error.
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode("utf-8")


def brief(value: object) -> str:
    """A received value for an error message: short, and never the repr of a deep container."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int can itself fail
        return "a large int"
    if isinstance(value, str | int | float | None):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body or not isinstance(body[key], kind):
        raise ProtocolError(f"field {key!r} missing or not {kind}")
    return body[key]


def _objects(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
    items = _require(body, "items", list)
    if not all(isinstance(raw, dict) for raw in items):
        raise ProtocolError(f"{what} item is not an object")
    return items


def _reward(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError("rewards must be numbers or null")
    try:
        return float(value)
    except OverflowError as err:  # an integer too large for a float
        raise ProtocolError("reward is not a representable number") from err


def _reward_reply(body: dict[str, Any], request_id: str, client: str) -> RewardReply:
    raws = _objects(body, "reply")
    with_method = sum("method" in raw for raw in raws)
    if with_method not in (0, len(raws)):
        raise ProtocolError("per-item methods must be on every item or on none")
    scores = [
        ItemScores(
            _require(raw, "key", str),
            [_reward(r) for r in _require(raw, "rewards", list)],
            check_method(raw["method"]) if with_method else None,
        )
        for raw in raws
    ]
    counts = _require(body, "methods", dict)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts.values()):
        raise ProtocolError("method counts must be integers")
    return RewardReply(request_id, client, scores, dict(counts))


def decode(payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse bytes into a message; anything malformed raises ProtocolError, never something else.

    A payload longer than ``max_bytes`` is refused before it is parsed.
    """
    if len(payload) > max_bytes:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: also 4300+ digit ints
        raise ProtocolError(f"not a JSON message: {str(err)[:200]}") from err
    if not isinstance(body, dict):
        raise ProtocolError("message is not a JSON object")
    if type(body.get("v")) is not int or body["v"] != PROTOCOL_VERSION:  # not 2.0, not True
        raise ProtocolError(f"protocol version {brief(body.get('v'))}, expected {PROTOCOL_VERSION}")
    kind = body.get("kind")
    request_id = _require(body, "request_id", str)
    client = _require(body, "client", str)
    if kind == "reward":
        items = []
        for raw in _objects(body, "request"):
            cands = _require(raw, "candidates", list)
            if not all(isinstance(c, str) for c in cands):
                raise ProtocolError("candidates must be strings")
            items.append(RewardItem(_require(raw, "key", str), _require(raw, "question", str), cands))
        return RewardRequest(request_id, client, items)
    if kind == "reward_reply":
        return _reward_reply(body, request_id, client)
    if kind == "competence":
        citems = [
            CompetenceItem(
                _require(raw, "key", str), _require(raw, "question", str), _require(raw, "answer", str)
            )
            for raw in _objects(body, "competence")
        ]
        return CompetenceRequest(request_id, client, citems)
    if kind == "competence_reply":
        return CompetenceReply(request_id, client, list(_require(body, "bits", list)))
    if kind == "error":
        error = body.get("error", "")
        if not isinstance(error, str):
            raise ProtocolError("error must be a string")
        return ErrorReply(request_id, client, error)
    raise ProtocolError(f"unknown message kind {brief(kind)}")


# -- checks the server applies to every reply ----------------------------------------------------------
class Rejected(Exception):
    """A reply (or one item of it) the server does not accept; ``reason`` is the counted category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_method(method: object) -> Method:
    if not isinstance(method, str) or method not in METHODS:
        raise ProtocolError(f"unknown evaluation method {brief(method)}")
    return method  # type: ignore[return-value]


def check_reply(reply: Message, expected: type, client: str, request_id: str) -> Message:
    """The reply itself: not an error reply, of the expected kind, from the client and request asked."""
    if isinstance(reply, ErrorReply):
        raise Rejected("client_error", reply.error[:500])
    if not isinstance(reply, expected):
        raise Rejected("malformed_reply", f"expected a {expected.__name__}, got {reply.kind!r}")
    if reply.client != client or reply.request_id != request_id:
        raise Rejected(
            "unasked_client", f"reply names client {reply.client[:80]!r} / request {reply.request_id[:80]!r}"
        )
    return reply


def check_method_counts(reply: RewardReply) -> dict[str, int]:
    """A reward reply's aggregate: a count per method (each named once), adding up to its items, and
    equal to the tally of its per-item methods when it carries them."""
    counts = reply.methods
    if set(counts) != set(METHODS) or any(n < 0 for n in counts.values()):
        raise Rejected("bad_methods", f"method counts must name {list(METHODS)} with counts >= 0")
    if sum(counts.values()) != len(reply.items):
        raise Rejected(
            "bad_methods", f"method counts add up to {sum(counts.values())}, not {len(reply.items)}"
        )
    methods = [i.method for i in reply.items if i.method is not None]
    if methods and method_counts(methods) != counts:
        raise Rejected("bad_methods", "method counts differ from the per-item methods")
    return {m: counts[m] for m in METHODS}


def check_reward_item(
    item: ItemScores, expected_len: int | None, seen: set[str], max_reward: float
) -> list[float | None]:
    """One reply item: asked for, not repeated, one finite reward in ``[0, max_reward]`` per candidate."""
    if expected_len is None or item.key in seen:
        raise Rejected("unknown_question", f"reply for unknown or repeated item {item.key[:80]!r}")
    seen.add(item.key)
    if len(item.rewards) != expected_len:
        raise Rejected("wrong_length", f"{len(item.rewards)} rewards for {expected_len} candidates")
    if any(r is not None and not math.isfinite(r) for r in item.rewards):
        raise Rejected("non_finite", f"NaN or infinite reward for item {item.key[:80]!r}")
    if any(r is not None and not 0.0 <= r <= max_reward for r in item.rewards):
        raise Rejected("out_of_range", f"a reward for item {item.key[:80]!r} is outside [0, {max_reward:g}]")
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
            raise Rejected(
                "invalid_bits", f"competence reply entry {i} must be the int 0 or 1, got {brief(bit)}"
            )
    return list(bits)
