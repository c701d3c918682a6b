"""The wire protocol between the server and its clients: messages, their one encoding, every check.

Requests and replies are plain dataclasses with one encoding (below); byte counts are the length of
that encoding on every transport (Flower carries the same bytes in one record). A reply is always
decoded and checked here before the server trusts it, for reward rounds and competence queries alike.

Nothing crosses that the protocol does not need. Down: per item the question text and the candidate
completions. Up: one reward per candidate (or None: the client cannot judge it), and per reply how
many items were scored by answer, by model or not at all (``methods``, aggregate counts for
``fed/methods`` and ``fed/abstentions``). Items are keyed by their position in the request (keys are
``"0"``, ``"1"``, ...: they say nothing about a question, its id or its domain), so no key is sent: a
reply covers the request's items in order. Which item a client could score by its own answers would
tell the server which questions it holds, so the per-item ``method`` is sent only when the run's
operator asks for it (``federation.per_item_methods``, for debugging).

Request ids are random (:func:`new_request_id`): they pair a reply with its request and say nothing
else (not the round, not whether a client is asked as a replacement).

Competence queries (building the confidence graph) send the server's own auxiliary questions with
their answers down (the auxiliary set is the server's, so this discloses nothing private), and bring
one bit per question up: did the client's model answer it correctly.

The encoding (version 3): ``HEADER \\n BODY``. HEADER is a compact JSON object: ``v``, ``kind``,
``id`` (the request id), ``client``, the kind's own scalars (below) and ``z: 1`` when BODY is
zlib-compressed (the encoder compresses a body only where that makes it shorter). BODY per kind:

* ``reward``: JSON ``{"questions": [...], "candidates": [[...], ...]}``, one entry per item.
* ``competence``: JSON ``{"questions": [...], "answers": [...]}``.
* ``reward_reply``: one byte per reward, items in request order, their lengths in the header's
  ``shape`` (run-length pairs ``[rewards per item, items]``). A reward is correctness ``c`` in [0, 1]
  plus, for a well-formed answer, the client's format reward ``b`` (header ``bonus``): the byte is
  ``f << 7 | k`` with ``c = k / 126`` and ``f`` = bonus added, so 0, 1, ``b`` and ``1 + b`` are exact
  and any other reward is within 1/252 of the one the client computed (one just outside
  ``[0, 1 + b]`` by less than that is sent as the nearest end). ``0xFF`` is None (abstain) and
  ``0x7F`` a reward the grid cannot hold (NaN, infinite, further outside ``[0, 1 + b]``): it decodes
  as NaN and the server rejects it like any non-finite reward. Header ``methods``: items per method, in
  :data:`METHODS` order; ``item_methods`` (only with per-item methods): one letter per item.
* ``competence_reply``: header ``n``; BODY the n bits, first bit highest, zero-padded to a byte.
* Both replies: header ``privacy_spent`` ``[epsilon, delta]``, only from a client with differential
  privacy (:mod:`fedgrpo.client.privacy`): its run-long spend.
* ``error``: header ``error``; no BODY.

Every receiver refuses a payload longer than its limit (default :data:`MAX_MESSAGE_BYTES`) before
parsing it, and inflates a compressed body only up to that same limit (a zip bomb is refused unread
beyond it). Every reward must lie in the range the server declared (``[0, 1 + format_reward]``); the
server checks the decoded values.
"""

from __future__ import annotations

import json
import math
import secrets
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

PROTOCOL_VERSION = 3  # 3: header line + packed body (a byte per reward, bits, zlib where it pays)
MAX_MESSAGE_BYTES = 64 * 2**20  # the default receiving limit, on every transport
Method = Literal["answer", "model", "none"]
METHODS: tuple[str, ...] = get_args(Method)
STEPS = 126  # the correctness grid: k / 126 for k in 0..126 (7 bits; 0 and 1 exact)
BONUS_BIT, INVALID_CODE, NONE_CODE = 0x80, 0x7F, 0xFF
COMPRESS_FROM = 64  # bytes: below this a zlib stream's framing (6+ bytes) rarely pays


def new_request_id() -> str:
    """A fresh random id for one request: it only pairs a reply with its request. Random, not a
    counter or a name, so it tells a client nothing (not the round, not whether it is asked as a
    replacement, not how many others were asked)."""
    return secrets.token_hex(8)


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
    """Per item its rewards; per reply how many items each method scored (``none``: abstained).

    ``bonus`` is the format reward the client adds to a well-formed answer (``federation.format_reward``):
    on the wire rewards are packed so that 0, 1, ``bonus`` and ``1 + bonus`` stay exact.
    """

    request_id: str
    client: str
    items: list[ItemScores]
    methods: dict[str, int]
    privacy_spent: tuple[float, float] | None = None  # a private client's run-long (epsilon, delta)
    bonus: float = 0.1  # federation.format_reward's default
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


# -- encoding -------------------------------------------------------------------------------------------
def unpack_reward(code: int, bonus: float) -> float | None:
    """The reward one byte stands for (see the module docstring)."""
    if code == NONE_CODE:
        return None
    k = code & ~BONUS_BIT
    if k > STEPS:
        return math.nan
    return k / STEPS + (bonus if code & BONUS_BIT else 0.0)


def pack_reward(reward: float | None, bonus: float) -> int:
    """The byte nearest ``reward`` (ties: without the bonus); INVALID_CODE if none is within half a step."""
    if reward is None:
        return NONE_CODE
    try:
        value = float(reward)
    except (TypeError, ValueError, OverflowError):  # not a number a client should send: it crosses as NaN
        return INVALID_CODE
    code, error = INVALID_CODE, 0.5 / STEPS + 1e-12
    for offset, bit in ((0.0, 0), (bonus, BONUS_BIT)):
        correctness = value - offset
        if not -1.0 <= correctness <= 2.0:  # also NaN and infinite rewards or bonuses
            continue
        candidate = bit | min(max(round(correctness * STEPS), 0), STEPS)
        miss = abs(unpack_reward(candidate, bonus) - value)  # type: ignore[operator]
        if miss < error:
            code, error = candidate, miss
    return code


def _json(value: object) -> bytes:
    # NaN/inf (a bonus) are allowed on the wire on purpose: the rewards they make decode as NaN, and
    # the receiver rejects those with a counted error.
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode("utf-8")


def _shape(counts: list[int]) -> list[list[int]]:
    """Run-length pairs ``[count, repeats]``: a reply's items mostly have the same number of rewards."""
    runs: list[list[int]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    return runs


def _layout(message: Message) -> tuple[dict[str, Any], bytes]:
    """The kind's own header fields and its body."""
    if isinstance(message, RewardRequest):
        questions = [i.question for i in message.items]
        return {}, _json({"questions": questions, "candidates": [i.candidates for i in message.items]})
    if isinstance(message, CompetenceRequest):
        return {}, _json(
            {"questions": [i.question for i in message.items], "answers": [i.answer for i in message.items]}
        )
    if isinstance(message, RewardReply):
        if set(message.methods) != set(METHODS):
            raise ValueError(f"method counts must name {list(METHODS)}")
        header: dict[str, Any] = {
            "methods": [message.methods[m] for m in METHODS],
            "bonus": message.bonus,
            "shape": _shape([len(i.rewards) for i in message.items]),
        }
        methods = [i.method for i in message.items]
        if any(m is not None for m in methods):
            if None in methods:
                raise ValueError("per-item methods must be on every item or on none")
            header["item_methods"] = "".join(m[0] for m in methods)  # type: ignore[index]
        return header, bytes(pack_reward(r, message.bonus) for i in message.items for r in i.rewards)
    if isinstance(message, CompetenceReply):
        if any(type(b) is not int or b not in (0, 1) for b in message.bits):
            raise ValueError("competence bits must be the ints 0 or 1")
        n = len(message.bits)
        number = int("".join(map(str, message.bits)) or "0", 2) << (-n % 8)
        return {"n": n}, number.to_bytes((n + 7) // 8, "big")
    if isinstance(message, ErrorReply):
        return {"error": message.error}, b""
    raise TypeError(f"cannot encode {type(message).__name__}")  # pragma: no cover - the union is exhaustive


def encode(message: Message) -> bytes:
    """The message's one encoding: a JSON header line, then its body (see the module docstring)."""
    own, body = _layout(message)
    header = {"v": PROTOCOL_VERSION, "kind": message.kind, "id": message.request_id, "client": message.client}
    header.update(own)
    if (spent := getattr(message, "privacy_spent", None)) is not None:  # absent when a client has no DP
        header["privacy_spent"] = list(spent)
    if len(body) >= COMPRESS_FROM and len(packed := zlib.compress(body, 9)) < len(body):
        header["z"], body = 1, packed
    return _json(header) + b"\n" + body


def brief(value: object) -> str:
    """A received value for an error message: short, and never the repr of a deep container."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int can itself fail
        return "a large int"
    if isinstance(value, str | int | float | None):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body or not isinstance(body[key], kind) or isinstance(body[key], bool):
        raise ProtocolError(f"field {key!r} missing or not {kind}")
    return body[key]


def _strings(body: dict[str, Any], key: str) -> list[str]:
    values = _require(body, key, list)
    if not all(isinstance(v, str) for v in values):
        raise ProtocolError(f"field {key!r} must hold only strings")
    return values


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: also 4300+ digit ints
        raise ProtocolError(f"{what} is not JSON: {str(err)[:200]}") from err
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _inflate(data: bytes, limit: int) -> bytes:
    """A zlib body, inflated to at most ``limit`` bytes: a zip bomb is refused, never inflated whole."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise ProtocolError(f"body is not zlib data: {err}") from err
    if len(out) > limit or inflater.unconsumed_tail:
        raise ProtocolError(f"inflated body exceeds the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError("body is not one complete zlib stream")
    return out


HEADER_KEYS = {"v", "kind", "id", "client", "z"}
KIND_KEYS: dict[str, set[str]] = {
    "reward": set(),
    "competence": set(),
    "reward_reply": {"methods", "bonus", "shape", "item_methods", "privacy_spent"},
    "competence_reply": {"n", "privacy_spent"},
    "error": {"error"},
}
METHOD_LETTERS = {m[0]: m for m in METHODS}


def privacy_spent(value: object) -> tuple[float, float] | None:
    """A reply's optional privacy spend: absent, or [epsilon, delta], finite, eps >= 0, 0 <= delta < 1."""
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ProtocolError("privacy_spent must be [epsilon, delta]")
    try:
        epsilon, delta = float(value[0]), float(value[1])
    except OverflowError as err:
        raise ProtocolError("privacy_spent is not representable") from err
    if not (math.isfinite(epsilon) and epsilon >= 0 and 0 <= delta < 1):
        raise ProtocolError("privacy_spent needs a finite epsilon >= 0 and a delta in [0, 1)")
    return epsilon, delta


def _reward_request(body: bytes, request_id: str, client: str) -> RewardRequest:
    content = _load_json(body, "reward request body")
    questions, groups = _strings(content, "questions"), _require(content, "candidates", list)
    if len(groups) != len(questions) or len(content) != 2:
        raise ProtocolError("a reward request body has one question and one candidate list per item")
    items = []
    for i, (question, group) in enumerate(zip(questions, groups, strict=True)):
        if not isinstance(group, list) or not all(isinstance(c, str) for c in group):
            raise ProtocolError("candidates must be lists of strings")
        items.append(RewardItem(str(i), question, group))
    return RewardRequest(request_id, client, items)


def _competence_request(body: bytes, request_id: str, client: str) -> CompetenceRequest:
    content = _load_json(body, "competence request body")
    questions, answers = _strings(content, "questions"), _strings(content, "answers")
    if len(answers) != len(questions) or len(content) != 2:
        raise ProtocolError("a competence request body has one question and one answer per item")
    items = [CompetenceItem(str(i), *pair) for i, pair in enumerate(zip(questions, answers, strict=True))]
    return CompetenceRequest(request_id, client, items)


def _bonus(header: dict[str, Any]) -> float:
    try:
        return float(_require(header, "bonus", (int, float)))
    except OverflowError as err:  # an integer too large for a float
        raise ProtocolError("bonus is not a representable number") from err


def _item_lengths(header: dict[str, Any], rewards: int, payload_bytes: int) -> list[int]:
    """How many rewards each item has, from the header's run-length ``shape``."""
    runs = _require(header, "shape", list)
    if not all(
        isinstance(r, list) and len(r) == 2 and all(type(n) is int and n >= 0 for n in r) for r in runs
    ):
        raise ProtocolError("shape must be [rewards per item, items] pairs of counts")
    # bounded before a list is built: an honest reply's items mostly hold a reward (a byte) each
    if sum(repeats for _, repeats in runs) > payload_bytes + rewards:
        raise ProtocolError("shape claims more items than the reply has bytes")
    if sum(count * repeats for count, repeats in runs) != rewards:
        raise ProtocolError(f"shape does not cover the {rewards} packed rewards")
    return [count for count, repeats in runs for _ in range(repeats)]


def _reward_reply(
    header: dict[str, Any], body: bytes, payload_bytes: int, request_id: str, client: str
) -> RewardReply:
    counts = _require(header, "methods", list)
    if len(counts) != len(METHODS) or not all(type(n) is int for n in counts):
        raise ProtocolError(f"methods must be {len(METHODS)} integer counts ({', '.join(METHODS)})")
    bonus = _bonus(header)
    lengths = _item_lengths(header, len(body), payload_bytes)
    methods: list[Any] = [None] * len(lengths)
    if "item_methods" in header:
        letters = _require(header, "item_methods", str)
        if len(letters) != len(lengths) or not set(letters) <= set(METHOD_LETTERS):
            raise ProtocolError(f"item_methods must be one of {sorted(METHOD_LETTERS)} per item")
        methods = [METHOD_LETTERS[c] for c in letters]
    table = [unpack_reward(code, bonus) for code in range(256)]
    items, start = [], 0
    for i, (length, method) in enumerate(zip(lengths, methods, strict=True)):
        items.append(ItemScores(str(i), [table[b] for b in body[start : start + length]], method))
        start += length
    counted = dict(zip(METHODS, counts, strict=True))
    return RewardReply(request_id, client, items, counted, privacy_spent(header.get("privacy_spent")), bonus)


def _competence_reply(header: dict[str, Any], body: bytes, request_id: str, client: str) -> CompetenceReply:
    n = _require(header, "n", int)
    if n < 0 or len(body) != (n + 7) // 8:
        raise ProtocolError(f"{brief(n)} bits do not fill {len(body)} bytes")
    pad = -n % 8
    number = int.from_bytes(body, "big")
    if number & ((1 << pad) - 1):
        raise ProtocolError("competence reply padding bits must be 0")
    bits = [int(b) for b in format(number >> pad, f"0{n}b")] if n else []
    return CompetenceReply(request_id, client, bits, privacy_spent(header.get("privacy_spent")))


def decode(payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse bytes into a message; anything malformed raises ProtocolError, never something else.

    A payload longer than ``max_bytes`` is refused before it is parsed, and a compressed body is
    inflated to at most ``max_bytes``.
    """
    if len(payload) > max_bytes:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    line, newline, body = payload.partition(b"\n")
    if not newline:
        raise ProtocolError("no header line")
    header = _load_json(line, "header")
    if type(header.get("v")) is not int or header["v"] != PROTOCOL_VERSION:  # not 3.0, not True
        raise ProtocolError(f"protocol version {brief(header.get('v'))}, expected {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in KIND_KEYS:
        raise ProtocolError(f"unknown message kind {brief(kind)}")
    if unknown := set(header) - HEADER_KEYS - KIND_KEYS[kind]:
        raise ProtocolError(f"unknown header fields {sorted(unknown)[:5]}")
    request_id, client = _require(header, "id", str), _require(header, "client", str)
    if "z" in header:
        if type(header["z"]) is not int or header["z"] != 1:
            raise ProtocolError("z must be 1 (zlib) when present")
        body = _inflate(body, max_bytes)
    if kind == "reward":
        return _reward_request(body, request_id, client)
    if kind == "competence":
        return _competence_request(body, request_id, client)
    if kind == "reward_reply":
        return _reward_reply(header, body, len(payload), request_id, client)
    if kind == "competence_reply":
        return _competence_reply(header, body, request_id, client)
    if body:
        raise ProtocolError("an error reply has no body")
    return ErrorReply(request_id, client, _require(header, "error", str))


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
    if any(r is not None and not math.isfinite(r) for r in item.rewards):  # also what the grid cannot hold
        raise Rejected("non_finite", f"NaN, infinite or unpackable reward for item {item.key[:80]!r}")
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
