"""One exchange with the clients: send one request each, decode, check, count bytes and rejections.

Reward rounds and the confidence graph's competence queries both go through :func:`send`, so every
reply meets the same checks (:mod:`fedgrpo.protocol`) and every byte is counted the same way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedgrpo.protocol import Message, Rejected, check_reply
from fedgrpo.transport import Transport

log = logging.getLogger(__name__)


@dataclass
class Exchanged:
    """What one exchange brought back: accepted replies, rejections (by client) and the bytes moved."""

    replies: dict[str, Message] = field(default_factory=dict)
    rejected: dict[str, Rejected] = field(default_factory=dict)
    bytes_down: Counter = field(default_factory=Counter)
    bytes_up: Counter = field(default_factory=Counter)
    stray: list[str] = field(default_factory=list)  # replies from clients that were not asked


def send(transport: Transport, requests: Mapping[str, Message], expected: type) -> Exchanged:
    """Send ``requests[client]`` (each with its own ``request_id``) and check every reply.

    Nothing here raises on a bad reply: each failure is a :class:`Rejected` kept per client and logged.
    """
    out = Exchanged()
    if not requests:
        return out
    for client, delivery in transport.exchange(requests).items():
        out.bytes_down[client] += delivery.bytes_down
        out.bytes_up[client] += delivery.bytes_up
        request = requests.get(client)
        try:
            if request is None:
                out.stray.append(client)
                raise Rejected("unasked_client", "reply from a client that was not asked")
            if delivery.failure is not None or delivery.reply is None:
                raise Rejected(delivery.failure or "client_failed", delivery.error or "no reply")
            out.replies[client] = check_reply(delivery.reply, expected, client, request.request_id)
        except Rejected as err:
            out.rejected[client] = err
            log.warning("rejected reply from %s (%s): %s", client, err.reason, err.detail)
    for client in requests:
        if client not in out.replies and client not in out.rejected:
            out.rejected[client] = Rejected("client_failed", "the transport returned nothing")
    return out
