"""Building the confidence graph at the start of a run: one competence query per client.

The server embeds its auxiliary questions, sends each client one :class:`CompetenceRequest` with all
of them (questions and the server's own answers) and gets one bit per question back. Each reply is
checked; a client whose reply is missing, malformed or fails :func:`validate_competence_reply` gets
an all-zero row (it will not be routed to until online updates say otherwise), and the rejection is
logged and counted in the returned cost statistics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fedgrpo.data import Example
from fedgrpo.selection.confidence_graph import ConfidenceGraph, validate_competence_reply
from fedgrpo.transport import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ErrorReply,
    ProtocolError,
    Transport,
    decode,
    encode,
)

log = logging.getLogger(__name__)


def build_confidence_graph(
    transport: Transport,
    auxiliary: Sequence[Example],
    embed: Callable[[list[str]], torch.Tensor],
    neighbours: int,
    samples: int = 1,
) -> tuple[ConfidenceGraph, dict[str, Any]]:
    """Query every client of ``transport`` once on ``auxiliary``; return the graph and its cost.

    ``samples`` is how many answers each client model samples per question; it only enters the cost
    statistics (client forward passes = clients x exemplars x samples).
    """
    if not auxiliary:
        raise ValueError("the confidence graph needs at least one auxiliary example")
    start = time.perf_counter()
    clients = list(transport.client_names)
    embeddings = embed([ex.question for ex in auxiliary])
    items = [CompetenceItem(ex.qid, ex.question, ex.answer) for ex in auxiliary]
    request_ids = {c: f"competence-{c}" for c in clients}
    requests = {c: encode(CompetenceRequest(request_ids[c], c, items)) for c in clients}
    correctness = torch.zeros(len(clients), len(auxiliary))
    rejected: Counter = Counter()
    rejected_clients: dict[str, str] = {}
    bytes_down = bytes_up = 0
    deliveries = transport.exchange(requests)
    for k, client in enumerate(clients):
        delivery = deliveries.get(client)
        reason, detail, bits = _check(client, request_ids[client], delivery, len(auxiliary))
        if delivery is not None:
            bytes_down += delivery.bytes_down
            bytes_up += delivery.bytes_up
        if bits is None:
            rejected[reason] += 1
            rejected_clients[client] = f"{reason}: {detail}"
            log.warning("competence reply from %s rejected (%s): %s; all-zero row", client, reason, detail)
            continue
        correctness[k] = torch.tensor(bits, dtype=torch.float32)
    graph = ConfidenceGraph(embeddings, correctness, clients, neighbours)
    stats = {
        "clients": len(clients),
        "exemplars": len(auxiliary),
        "neighbours": graph.neighbours,
        "bytes_down": bytes_down,
        "bytes_up": bytes_up,
        "client_forward_passes": len(clients) * len(auxiliary) * samples,
        "accuracy_per_client": {c: round(float(correctness[k].mean()), 4) for k, c in enumerate(clients)},
        "rejected": dict(sorted(rejected.items())),
        "rejected_clients": rejected_clients,
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info(
        "confidence graph: %d clients x %d exemplars, %.1f KB down, %.1f KB up, %d rejected",
        len(clients),
        len(auxiliary),
        bytes_down / 1e3,
        bytes_up / 1e3,
        sum(rejected.values()),
    )
    return graph, stats


def _check(client: str, request_id: str, delivery: Any, expected: int) -> tuple[str, str, list[int] | None]:
    """(reason, detail, bits): bits is None when the reply is rejected."""
    if delivery is None or delivery.error is not None or delivery.reply is None:
        return "client_failed", getattr(delivery, "error", None) or "no reply", None
    try:
        reply = decode(delivery.reply)
    except ProtocolError as err:
        return "malformed_reply", str(err), None
    if isinstance(reply, ErrorReply):
        return "client_error", reply.error, None
    if not isinstance(reply, CompetenceReply):
        return "malformed_reply", f"expected a competence reply, got {reply.kind!r}", None
    if reply.client != client or reply.request_id != request_id:
        return "unasked_client", f"reply names client {reply.client!r} / request {reply.request_id!r}", None
    try:
        return "", "", validate_competence_reply(reply.bits, expected)
    except ValueError as err:
        return "invalid_bits", str(err), None
