"""The wire encoding of :mod:`fedgrpo.protocol`'s messages: one byte string per message, on every
transport.

The encoding (version 4, ``docs/notes/protocol-v4.md``): a binary header, then BODY.

* byte 0: the protocol version (4). A version 3 peer's JSON header line starts with ``{``: either
  way a peer of another version is refused with an error naming both (:mod:`~fedgrpo.protocol.legacy`).
* byte 1: the kind (low 3 bits: :data:`KINDS`) and flags (:data:`ZLIB` body compressed,
  :data:`SPENT` a privacy spend follows, :data:`SHORT_ID` the request id is 4 raw bytes,
  :data:`ITEM_METHODS`, :data:`RUNS`); a flag the kind does not use is malformed.
* the request id: 4 raw bytes with ``SHORT_ID`` (a :func:`~fedgrpo.protocol.messages.new_request_id`,
  8 hex characters), else a varint length and UTF-8. It only pairs a reply with its request.
* the kind's own fields (varints), then with ``SPENT`` the privacy spend ``[epsilon, delta]`` as two
  big-endian float64 (only from a client with differential privacy: its run-long spend).

No client name travels: the channel knows whom it asked (the decoder's ``client``). Per kind:

* ``reward`` / ``competence`` (requests): no fields; BODY JSON ``{"questions": [...], "candidates":
  [[...], ...]}`` / ``{"questions": [...], "answers": [...]}``, one entry per item (text dominates).
* ``reward_reply``: the items scored by answer and by model (``none`` is the rest of the items); the
  shape: the rewards per item when every item has as many (the items are then the body's length
  over it), or with ``RUNS`` a count of run-length pairs ``(rewards per item, items)``; with
  ``ITEM_METHODS`` (and ``RUNS``) one byte per item (an index into :data:`METHODS`, only with
  ``federation.per_item_methods``). BODY: one byte per reward, items in request order: correctness
  ``k / 126`` (:func:`~fedgrpo.protocol.framing.pack_reward`), ``0xFF`` None (abstain), ``0x7F`` a
  reward the grid cannot hold (decodes as NaN; the server rejects it). Clients send correctness
  only: the server adds the format reward.
* ``competence_reply``: the number of bits n; BODY the n bits, first bit highest, zero-padded.
* ``error``: BODY the error text (UTF-8).

The encoder compresses a BODY with zlib only where that makes it shorter. Every receiver refuses a
payload longer than its limit (default :data:`MAX_MESSAGE_BYTES`) before parsing it, and inflates a
compressed body only up to that same limit (a zip bomb is refused unread beyond it).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from fedgrpo.protocol.framing import Reader, pack_reward, two_floats, unpack_rewards, varint
from fedgrpo.protocol.legacy import mismatch
from fedgrpo.protocol.messages import (
    METHODS,
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ItemScores,
    Message,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    brief,
)

__all__ = ["MAX_MESSAGE_BYTES", "PROTOCOL_VERSION", "decode", "encode", "privacy_spent"]

PROTOCOL_VERSION = 4  # 4: binary header, no sender, no format bonus; 3: JSON header line
MAX_MESSAGE_BYTES = 64 * 2**20  # the default receiving limit, on every transport
COMPRESS_FROM = 64  # bytes: below this a zlib stream's framing (6+ bytes) rarely pays
KINDS = ("reward", "competence", "reward_reply", "competence_reply", "error")
KIND_MASK, ZLIB, SPENT, SHORT_ID, ITEM_METHODS, RUNS = 0x07, 0x08, 0x10, 0x20, 0x40, 0x80
FLAGS = {  # the flags each kind may carry
    "reward": ZLIB | SHORT_ID,
    "competence": ZLIB | SHORT_ID,
    "reward_reply": ZLIB | SHORT_ID | SPENT | ITEM_METHODS | RUNS,
    "competence_reply": ZLIB | SHORT_ID | SPENT,
    "error": ZLIB | SHORT_ID,
}
SHORT_ID_BYTES = 4
_SHORT_ID = re.compile(f"[0-9a-f]{{{2 * SHORT_ID_BYTES}}}")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _runs(counts: list[int]) -> list[tuple[int, int]]:
    """Run-length pairs ``(count, repeats)``: a reply's items mostly have the same number of rewards."""
    runs: list[list[int]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    return [(count, repeats) for count, repeats in runs]


def _reward_reply_fields(message: RewardReply) -> tuple[int, bytes, bytes]:
    if set(message.methods) != set(METHODS):
        raise ValueError(f"method counts must name {list(METHODS)}")
    flags, fields = 0, varint(message.methods["answer"]) + varint(message.methods["model"])
    runs = _runs([len(i.rewards) for i in message.items])
    methods = [i.method for i in message.items]
    per_item = any(m is not None for m in methods)
    if len(runs) == 1 and runs[0][0] and not per_item:  # the common case: the items follow from the body
        fields += varint(runs[0][0])
    else:
        flags |= RUNS
        fields += varint(len(runs)) + b"".join(varint(c) + varint(r) for c, r in runs)
    if per_item:
        if None in methods:
            raise ValueError("per-item methods must be on every item or on none")
        flags |= ITEM_METHODS
        fields += bytes(METHODS.index(m) for m in methods)  # type: ignore[arg-type]
    return flags, fields, bytes(pack_reward(r) for i in message.items for r in i.rewards)


def _layout(message: Message) -> tuple[int, bytes, bytes]:
    """The kind's flags, its own header fields and its body."""
    if isinstance(message, RewardRequest):
        questions = [i.question for i in message.items]
        return 0, b"", _json({"questions": questions, "candidates": [i.candidates for i in message.items]})
    if isinstance(message, CompetenceRequest):
        items = message.items
        return 0, b"", _json({"questions": [i.question for i in items], "answers": [i.answer for i in items]})
    if isinstance(message, RewardReply):
        return _reward_reply_fields(message)
    if isinstance(message, CompetenceReply):
        if any(type(b) is not int or b not in (0, 1) for b in message.bits):
            raise ValueError("competence bits must be the ints 0 or 1")
        n = len(message.bits)
        number = int("".join(map(str, message.bits)) or "0", 2) << (-n % 8)
        return 0, varint(n), number.to_bytes((n + 7) // 8, "big")
    if isinstance(message, ErrorReply):
        return 0, b"", message.error.encode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(message).__name__}")  # pragma: no cover - the union is exhaustive


def encode(message: Message) -> bytes:
    """The message's one encoding: binary header, then body (see the module docstring). The client
    name is not sent."""
    flags, fields, body = _layout(message)
    if _SHORT_ID.fullmatch(message.request_id):
        flags, request_id = flags | SHORT_ID, bytes.fromhex(message.request_id)
    else:
        raw = message.request_id.encode("utf-8")
        request_id = varint(len(raw)) + raw
    if (spent := getattr(message, "privacy_spent", None)) is not None:  # absent when a client has no DP
        flags, fields = flags | SPENT, fields + two_floats(spent)
    if len(body) >= COMPRESS_FROM and len(packed := zlib.compress(body, 9)) < len(body):
        flags, body = flags | ZLIB, packed
    kind = KINDS.index(message.kind)
    return bytes([PROTOCOL_VERSION, kind | flags]) + request_id + fields + body


def privacy_spent(pair: tuple[float, float]) -> tuple[float, float]:
    """A reply's privacy spend as read: [epsilon, delta], finite, epsilon >= 0, 0 <= delta < 1."""
    epsilon, delta = pair
    if not (math.isfinite(epsilon) and epsilon >= 0 and 0 <= delta < 1):
        raise ProtocolError("privacy_spent needs a finite epsilon >= 0 and a delta in [0, 1)")
    return epsilon, delta


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: also 4300+ digit ints
        raise ProtocolError(f"{what} is not JSON: {str(err)[:200]}") from err
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _strings(body: dict[str, Any], key: str, kind: type = str) -> list[Any]:
    values = body.get(key)
    if not isinstance(values, list) or not all(isinstance(v, kind) for v in values):
        raise ProtocolError(f"field {key!r} missing or not a list of {kind.__name__}")
    return values


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


def _reward_request(body: bytes, request_id: str, client: str) -> RewardRequest:
    content = _load_json(body, "reward request body")
    questions, groups = _strings(content, "questions"), _strings(content, "candidates", list)
    if len(groups) != len(questions) or len(content) != 2:
        raise ProtocolError("a reward request body has one question and one candidate list per item")
    if not all(isinstance(c, str) for group in groups for c in group):
        raise ProtocolError("candidates must be lists of strings")
    items = [RewardItem(str(i), q, group) for i, (q, group) in enumerate(zip(questions, groups, strict=True))]
    return RewardRequest(request_id, client, items)


def _competence_request(body: bytes, request_id: str, client: str) -> CompetenceRequest:
    content = _load_json(body, "competence request body")
    questions, answers = _strings(content, "questions"), _strings(content, "answers")
    if len(answers) != len(questions) or len(content) != 2:
        raise ProtocolError("a competence request body has one question and one answer per item")
    items = [CompetenceItem(str(i), *pair) for i, pair in enumerate(zip(questions, answers, strict=True))]
    return CompetenceRequest(request_id, client, items)


def _runs_field(reader: Reader) -> list[tuple[int, int]]:
    """RUNS: a count of run-length pairs ``(rewards per item, items)``."""
    n = reader.varint()
    if n > len(reader.data):  # bounded before a list is built: a pair takes 2+ bytes
        raise ProtocolError("shape claims more runs than the reply has bytes")
    return [(reader.varint(), reader.varint()) for _ in range(n)]


def _reward_reply(reader: Reader, flags: int, limit: int, request_id: str, client: str) -> RewardReply:
    answer, model = reader.varint(), reader.varint()
    if flags & ITEM_METHODS and not flags & RUNS:
        raise ProtocolError("per-item methods need the explicit shape (RUNS)")
    runs = _runs_field(reader) if flags & RUNS else []
    per_item = 0 if flags & RUNS else reader.varint()  # uniform: rewards per item, items from the body
    if not flags & RUNS and per_item == 0:
        raise ProtocolError("a uniform shape needs at least one reward per item")
    items = sum(repeats for _, repeats in runs)
    codes = reader.take(items) if flags & ITEM_METHODS else b""
    if any(c >= len(METHODS) for c in codes):
        raise ProtocolError(f"a per-item method must be one of {len(METHODS)} codes")
    spent = privacy_spent(reader.two_floats()) if flags & SPENT else None
    rewards = unpack_rewards(_body(reader, flags, limit))
    if per_item:
        if len(rewards) % per_item:
            raise ProtocolError(f"{len(rewards)} packed rewards are not items of {per_item}")
        runs = [(per_item, len(rewards) // per_item)] if rewards else []
        items = len(rewards) // per_item
    # bounded before a list is built: an honest reply's items mostly hold a reward (a byte) each
    if items > len(reader.data) + len(rewards) or sum(c * r for c, r in runs) != len(rewards):
        raise ProtocolError(f"shape does not cover the {len(rewards)} packed rewards")
    methods: list[Any] = [METHODS[c] for c in codes] if flags & ITEM_METHODS else [None] * items
    scores, start = [], 0
    for i, length in enumerate(count for count, repeats in runs for _ in range(repeats)):
        scores.append(ItemScores(str(i), rewards[start : start + length], methods[i]))
        start += length
    counts = {"answer": answer, "model": model, "none": items - answer - model}  # < 0: rejected
    return RewardReply(request_id, client, scores, counts, spent)


def _competence_reply(
    reader: Reader, flags: int, limit: int, request_id: str, client: str
) -> CompetenceReply:
    n = reader.varint()
    spent = privacy_spent(reader.two_floats()) if flags & SPENT else None
    body = _body(reader, flags, limit)
    if len(body) != (n + 7) // 8:
        raise ProtocolError(f"{brief(n)} bits do not fill {len(body)} bytes")
    pad = -n % 8
    number = int.from_bytes(body, "big")
    if number & ((1 << pad) - 1):
        raise ProtocolError("competence reply padding bits must be 0")
    bits = [int(b) for b in format(number >> pad, f"0{n}b")] if n else []
    return CompetenceReply(request_id, client, bits, spent)


def _body(reader: Reader, flags: int, limit: int) -> bytes:
    body = reader.rest()
    return _inflate(body, limit) if flags & ZLIB else body


def _request_id(reader: Reader, flags: int) -> str:
    if flags & SHORT_ID:
        return reader.take(SHORT_ID_BYTES).hex()
    raw = reader.take(reader.varint())
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError("request id is not UTF-8") from err


def decode(payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES, client: str = "") -> Message:
    """Parse bytes into a message; anything malformed raises ProtocolError, never something else.

    ``client``: the client at the other end of the channel (a reply's sender, a request's recipient):
    the channel knows it, so it does not travel. A payload longer than ``max_bytes`` is refused before
    it is parsed, and a compressed body is inflated to at most ``max_bytes``. A message of another
    protocol version raises :class:`~fedgrpo.protocol.legacy.VersionMismatch` naming both versions.
    """
    if len(payload) > max_bytes:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    if len(payload) < 2:
        raise ProtocolError("no message header")
    if payload[0] != PROTOCOL_VERSION:
        raise mismatch(payload, PROTOCOL_VERSION)
    reader = Reader(payload, 2)
    code, flags = payload[1] & KIND_MASK, payload[1] & ~KIND_MASK
    if code >= len(KINDS):
        raise ProtocolError(f"unknown message kind {code}")
    kind = KINDS[code]
    if flags & ~FLAGS[kind]:
        raise ProtocolError(f"flags {flags & ~FLAGS[kind]:#04x} are not defined for a {kind!r} message")
    request_id = _request_id(reader, flags)
    if kind == "reward_reply":
        return _reward_reply(reader, flags, max_bytes, request_id, client)
    if kind == "competence_reply":
        return _competence_reply(reader, flags, max_bytes, request_id, client)
    body = _body(reader, flags, max_bytes)
    if kind == "reward":
        return _reward_request(body, request_id, client)
    if kind == "competence":
        return _competence_request(body, request_id, client)
    try:
        return ErrorReply(request_id, client, body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ProtocolError("error text is not UTF-8") from err
