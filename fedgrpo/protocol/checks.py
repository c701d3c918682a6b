"""What the server accepts of a decoded reply: every check, in one place, for every transport.

A failed check raises :class:`Rejected` with a reason the server counts (``fed/rejected``, per reason);
nothing a client sends is coerced into something acceptable.
"""

from __future__ import annotations

import math

from fedgrpo.protocol.messages import (
    METHODS,
    ErrorReply,
    ItemScores,
    Message,
    Method,
    ProtocolError,
    RewardReply,
    brief,
    method_counts,
)


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


def check_item_count(reply: RewardReply, asked: int) -> None:
    """A reply answers at most the items it was asked. One with more is not trusted at all: items
    travel as positions, so an extra item cannot be told apart from a misaligned reply."""
    if len(reply.items) > asked:
        raise Rejected("extra_items", f"{len(reply.items)} items for the {asked} asked")


def check_reward_item(item: ItemScores, expected_len: int | None, seen: set[str]) -> list[float | None]:
    """One reply item: asked for, not repeated, one finite correctness in ``[0, 1]`` per candidate (the
    server adds the format reward after this check)."""
    if expected_len is None or item.key in seen:
        raise Rejected("unknown_question", f"reply for unknown or repeated item {item.key[:80]!r}")
    seen.add(item.key)
    if len(item.rewards) != expected_len:
        raise Rejected("wrong_length", f"{len(item.rewards)} rewards for {expected_len} candidates")
    if any(r is not None and not math.isfinite(r) for r in item.rewards):  # also what the grid cannot hold
        raise Rejected("non_finite", f"NaN, infinite or unpackable reward for item {item.key[:80]!r}")
    if any(r is not None and not 0.0 <= r <= 1.0 for r in item.rewards):
        raise Rejected("out_of_range", f"a reward for item {item.key[:80]!r} is outside [0, 1]")
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
