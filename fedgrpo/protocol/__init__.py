"""The wire protocol between the server and its clients: messages, their one encoding, every check.

Requests and replies are plain dataclasses with one encoding (:mod:`~fedgrpo.protocol.wire`, version
4: a binary header, ``docs/notes/protocol-v4.md``); byte counts are the length of that encoding on
every transport (Flower carries the same bytes in one record). A peer of another version is refused
with an error naming both versions (:mod:`~fedgrpo.protocol.legacy`). A reply is always decoded and
checked by this package before the server trusts it, for reward rounds and competence queries alike.

Nothing crosses that the protocol does not need. Down: per item the question text and the candidate
completions. Up: one correctness per candidate in [0, 1] (or None: the client cannot judge it; the
format reward is a function of the candidate text, so the server adds it), and per reply how
many items were scored by answer, by model or not at all (``methods``, aggregate counts for
``fed/methods`` and ``fed/abstentions``). Items are keyed by their position in the request (keys are
``"0"``, ``"1"``, ...: they say nothing about a question, its id or its domain), so no key is sent: a
reply covers the request's items in order. Which item a client could score by its own answers would
tell the server which questions it holds, so the per-item ``method`` is sent only when the run's
operator asks for it (``federation.per_item_methods``, for debugging). A client with differential
privacy hides membership: it sends a value for every item and constant method counts
(:func:`hidden_method_counts`), never per-item methods.

Request ids are random (:func:`new_request_id`, 4 bytes): they pair a reply with its request and say
nothing else (not the round, not whether a client is asked as a replacement). No client name
travels: the channel knows whom it asked, and the decoder is told (``decode(payload, client=...)``).

Competence queries (building the confidence graph) send the server's own auxiliary questions with
their answers down (the auxiliary set is the server's, so this discloses nothing private), and bring
one bit per question up: did the client's model answer it correctly.

The package: :mod:`~fedgrpo.protocol.messages` (what is sent), :mod:`~fedgrpo.protocol.wire` (its
one encoding, with the receiving limits; its binary pieces in :mod:`~fedgrpo.protocol.framing`),
:mod:`~fedgrpo.protocol.legacy` (refusing another version) and :mod:`~fedgrpo.protocol.checks` (what
the server accepts of a decoded reply). Everything is re-exported here.
"""

from fedgrpo.protocol.checks import (
    Rejected,
    check_competence_bits,
    check_item_count,
    check_method,
    check_method_counts,
    check_reply,
    check_reward_item,
)
from fedgrpo.protocol.framing import pack_reward, unpack_reward
from fedgrpo.protocol.legacy import VersionMismatch, refusal
from fedgrpo.protocol.messages import (
    METHODS,
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ItemScores,
    Message,
    Method,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    brief,
    hidden_method_counts,
    method_counts,
    new_request_id,
)
from fedgrpo.protocol.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    decode,
    encode,
    privacy_spent,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "METHODS",
    "PROTOCOL_VERSION",
    "CompetenceItem",
    "CompetenceReply",
    "CompetenceRequest",
    "ErrorReply",
    "ItemScores",
    "Message",
    "Method",
    "ProtocolError",
    "Rejected",
    "RewardItem",
    "RewardReply",
    "RewardRequest",
    "VersionMismatch",
    "brief",
    "check_competence_bits",
    "check_method",
    "check_method_counts",
    "check_reply",
    "check_item_count",
    "check_reward_item",
    "decode",
    "encode",
    "hidden_method_counts",
    "method_counts",
    "new_request_id",
    "pack_reward",
    "privacy_spent",
    "refusal",
    "unpack_reward",
]
