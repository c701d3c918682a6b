"""The binary pieces of :mod:`fedgrpo.protocol.wire`: varints, the reward byte, a bounded reader.

Kept apart from the message layout so that each piece is checked once: a varint is minimal (no
padding bytes), a read past the end is a :class:`~fedgrpo.protocol.messages.ProtocolError`, and a
reward byte is one of the codes below.
"""

from __future__ import annotations

import math
import struct

from fedgrpo.protocol.messages import ProtocolError

STEPS = 126  # the correctness grid: k / 126 for k in 0..126 (7 bits; 0 and 1 exact)
INVALID_CODE, NONE_CODE = 0x7F, 0xFF
MAX_VARINT_BYTES = 9  # 63 bits: more than any count a message can hold
_TWO_FLOATS = struct.Struct(">dd")


def unpack_reward(code: int) -> float | None:
    """The correctness one byte stands for: ``k / 126``, None (0xFF: abstain), NaN (0x7F: what the grid
    cannot hold); any other code is malformed."""
    if code == NONE_CODE:
        return None
    if code == INVALID_CODE:
        return math.nan
    if code > STEPS:
        raise ProtocolError(f"reward byte {code:#04x} is not a code of the protocol")
    return code / STEPS


CODES = {code: unpack_reward(code) for code in (*range(STEPS + 1), INVALID_CODE, NONE_CODE)}


def unpack_rewards(data: bytes) -> list[float | None]:
    """A reply's reward bytes; a byte that is no code of the protocol is a ProtocolError."""
    if unknown := set(data) - CODES.keys():
        raise ProtocolError(f"reward byte {min(unknown):#04x} is not a code of the protocol")
    return [CODES[b] for b in data]


def pack_reward(reward: float | None) -> int:
    """The byte nearest a correctness in [0, 1]; INVALID_CODE for what is further than half a step
    outside it (NaN, infinite, not a number: it crosses as NaN and the server rejects it)."""
    if reward is None:
        return NONE_CODE
    try:
        value = float(reward)
    except (TypeError, ValueError, OverflowError):
        return INVALID_CODE
    if not -0.5 / STEPS <= value <= 1.0 + 0.5 / STEPS:  # also NaN
        return INVALID_CODE
    return min(max(round(value * STEPS), 0), STEPS)


def varint(n: int) -> bytes:
    """``n >= 0`` as LEB128: 7 bits a byte, low first, the high bit set on every byte but the last."""
    if n < 0 or n.bit_length() > 7 * MAX_VARINT_BYTES:
        raise ValueError(f"{n} is not a count the protocol carries")
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def two_floats(pair: tuple[float, float]) -> bytes:
    return _TWO_FLOATS.pack(*pair)


class Reader:
    """Reads a payload front to back; running out of bytes is a ProtocolError, never an IndexError."""

    def __init__(self, data: bytes, start: int = 0) -> None:
        self.data = data
        self.at = start

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ProtocolError(f"message truncated: {n} more bytes expected at byte {self.at}")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        n = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.byte()
            n |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i:
                    raise ProtocolError("a varint has a padding byte")
                return n
        raise ProtocolError(f"a varint longer than {MAX_VARINT_BYTES} bytes")

    def two_floats(self) -> tuple[float, float]:
        first, second = _TWO_FLOATS.unpack(self.take(_TWO_FLOATS.size))
        return first, second

    def rest(self) -> bytes:
        out = self.data[self.at :]
        self.at = len(self.data)
        return out
