"""The wire encoding of :mod:`fedgrpo.protocol`'s messages: one byte string per message, on every
transport.

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
import zlib
from typing import Any

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

PROTOCOL_VERSION = 3  # 3: header line + packed body (a byte per reward, bits, zlib where it pays)
MAX_MESSAGE_BYTES = 64 * 2**20  # the default receiving limit, on every transport
STEPS = 126  # the correctness grid: k / 126 for k in 0..126 (7 bits; 0 and 1 exact)
BONUS_BIT, INVALID_CODE, NONE_CODE = 0x80, 0x7F, 0xFF
COMPRESS_FROM = 64  # bytes: below this a zlib stream's framing (6+ bytes) rarely pays


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
