"""Building the confidence graph at the start of a run: one competence query per client (and
:func:`expert_agreement`, the online estimate of a client's competence from its peers during training).

The server embeds its auxiliary questions, sends each client one :class:`CompetenceRequest` with all
of them (questions and the server's own answers) and gets one bit per question back. A client whose
reply is missing or fails a check (:mod:`fedgrpo.protocol`) gets an all-zero row (it is not routed to
until online updates say otherwise); the rejection is logged and counted in the returned statistics.
Items are keyed by their position, never by their qid (which hashes the question's domain).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fedgrpo.data import Example
from fedgrpo.protocol import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    Rejected,
    check_competence_bits,
    new_request_id,
)
from fedgrpo.selection import ConfidenceGraph
from fedgrpo.server.exchange import send
from fedgrpo.server.stats import note_privacy_spent
from fedgrpo.transport import Transport

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
    items = [CompetenceItem(str(k), ex.question, ex.answer) for k, ex in enumerate(auxiliary)]
    requests = {c: CompetenceRequest(new_request_id(), c, items) for c in clients}
    exchanged = send(transport, requests, CompetenceReply)
    correctness = torch.zeros(len(clients), len(auxiliary))
    spent: dict[str, tuple[float, float]] = {}
    rejected = {c: r for c, r in exchanged.rejected.items() if c in requests}
    for k, client in enumerate(clients):
        reply = exchanged.replies.get(client)
        if reply is None:
            continue
        assert isinstance(reply, CompetenceReply)
        note_privacy_spent(spent, client, reply.privacy_spent)
        try:
            correctness[k] = torch.tensor(
                check_competence_bits(reply.bits, len(auxiliary)), dtype=torch.float32
            )
        except Rejected as err:
            rejected[client] = err
    for client, err in rejected.items():
        log.warning(
            "competence reply from %s rejected (%s): %s; all-zero row", client, err.reason, err.detail
        )
    graph = ConfidenceGraph(embeddings, correctness, clients, neighbours)
    bytes_down, bytes_up = sum(exchanged.bytes_down.values()), sum(exchanged.bytes_up.values())
    stats = {
        "clients": len(clients),
        "exemplars": len(auxiliary),
        "neighbours": graph.neighbours,
        "bytes_down": bytes_down,
        "bytes_up": bytes_up,
        "client_forward_passes": len(clients) * len(auxiliary) * samples,
        "accuracy_per_client": {c: round(float(correctness[k].mean()), 4) for k, c in enumerate(clients)},
        "rejected": dict(sorted(Counter(r.reason for r in rejected.values()).items())),
        "rejected_clients": {c: f"{r.reason}: {r.detail}" for c, r in sorted(rejected.items())},
        "seconds": round(time.perf_counter() - start, 3),
        "privacy_spent": {c: list(s) for c, s in sorted(spent.items())},
    }
    log.info(
        "confidence graph: %d clients x %d exemplars, %.1f KB down, %.1f KB up, %d rejected",
        len(clients),
        len(auxiliary),
        bytes_down / 1e3,
        bytes_up / 1e3,
        len(rejected),
    )
    return graph, stats


def expert_agreement(matrix: torch.Tensor, e: int) -> float | None:
    """Share of candidates where expert ``e``'s binarised reward (>= 0.5) equals the majority of the
    other experts' binarised rewards. Candidates that ``e`` did not score, that no other expert
    scored, or where the others tie are skipped; None when nothing is left to compare."""
    present = ~torch.isnan(matrix)
    bits = matrix >= 0.5
    others = torch.ones(matrix.shape[0], dtype=torch.bool)
    others[e] = False
    n = present[others].sum(dim=0)
    k = (bits & present)[others].sum(dim=0)
    valid = present[e] & (n > 0) & (2 * k != n)
    if not valid.any():
        return None
    return float((bits[e] == (2 * k > n))[valid].float().mean())
