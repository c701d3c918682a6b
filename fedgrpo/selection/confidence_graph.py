"""The confidence graph (paper's Module 1): route each question to the clients most competent near it.

Clients and auxiliary exemplars are nodes; the edge ``k -- j`` carries how reliably client ``k``
answers exemplar ``j`` (1/0 from the one-off competence queries, soft after online updates). A
question attaches to its ``L`` nearest exemplars by cosine similarity and a client's competence for
it is its mean edge weight over those neighbours. The client x exemplar matrix is queried once and
then updated online, instead of re-querying every client for every question as the paper does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fedgrpo.data import Question
from fedgrpo.selection.base import Selector
from fedgrpo.storage.atomic import atomic_path

_FORMAT_VERSION = 1


class ConfidenceGraph:
    """Clients x auxiliary exemplars; edge weight = how reliably client k answers exemplar j (1/0 from the
    competence queries, soft after online updates). A question attaches to its L nearest exemplars."""

    def __init__(
        self,
        exemplar_embeddings: torch.Tensor,
        correctness: torch.Tensor,
        clients: list[str],
        neighbours: int = 20,
    ) -> None:
        emb = torch.as_tensor(exemplar_embeddings)
        corr = torch.as_tensor(correctness)
        clients = list(clients)
        if emb.ndim != 2:
            raise ValueError(f"exemplar_embeddings must be 2-d (E x d), got shape {tuple(emb.shape)}")
        if not torch.isfinite(emb).all():
            raise ValueError("exemplar_embeddings contain NaN or inf")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"neighbours must be an int >= 1, got {neighbours!r}")
        if len(set(clients)) != len(clients):
            dupes = sorted({c for c in clients if clients.count(c) > 1})
            raise ValueError(f"client names must be unique; duplicated: {dupes}")
        self._clients = clients
        self._index = {name: k for k, name in enumerate(clients)}
        self._embeddings = F.normalize(emb.detach().to(torch.float32), dim=1)
        self._correctness = self._checked_correctness(corr)
        self.neighbours = min(neighbours, self.num_exemplars)

    # ----------------------------------------------------------------------------- properties
    @property
    def clients(self) -> list[str]:
        return list(self._clients)

    @property
    def num_exemplars(self) -> int:
        return self._embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self._embeddings.shape[1]

    @property
    def correctness(self) -> torch.Tensor:
        """A copy of the (K x E) edge weights; change them with :meth:`set_correctness` or :meth:`update`."""
        return self._correctness.clone()

    def set_correctness(self, correctness: torch.Tensor | Sequence[Sequence[float]]) -> None:
        """Replace the edge weights (e.g. resuming a run); checked like in ``__init__``."""
        self._correctness = self._checked_correctness(torch.as_tensor(correctness))

    def _checked_correctness(self, corr: torch.Tensor) -> torch.Tensor:
        k, e = len(self._clients), self.num_exemplars
        if corr.ndim != 2 or tuple(corr.shape) != (k, e):
            raise ValueError(
                f"correctness must be (clients x exemplars) = ({k} x {e}), got shape {tuple(corr.shape)}"
            )
        corr = corr.detach().to(torch.float32).clone()
        if not torch.isfinite(corr).all():
            raise ValueError("correctness contains NaN or inf")
        if corr.numel() and (corr.min() < 0 or corr.max() > 1):
            raise ValueError(
                f"correctness values must lie in [0, 1], got range [{corr.min():.3g}, {corr.max():.3g}]"
            )
        return corr

    # ----------------------------------------------------------------------------- routing
    def _questions(self, question_embeddings: torch.Tensor) -> torch.Tensor:
        q = torch.as_tensor(question_embeddings).detach().to(torch.float32)
        if q.ndim == 1:
            q = q.unsqueeze(0)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(
                f"question embeddings must be (N x {self.dim}) or ({self.dim},), got shape {tuple(q.shape)}"
            )
        return q

    def neighbours_of(self, question_embeddings: torch.Tensor) -> torch.Tensor:
        """(N x L) indices of each question's L nearest exemplars by cosine similarity, nearest first."""
        q = self._questions(question_embeddings)
        if self.num_exemplars == 0:
            return torch.empty(q.shape[0], 0, dtype=torch.long)
        sims = F.normalize(q, dim=1) @ self._embeddings.T
        return torch.topk(sims, self.neighbours, dim=1).indices

    def competence(self, question_embeddings: torch.Tensor) -> torch.Tensor:
        """(N x K) mean correctness of each client over each question's L neighbours.

        One dense (N x E) @ (E x K) product, no sparse ops or Python loops. The weight matrix holds 1 at the
        neighbours and the product is scaled by 1/L afterwards (the same as weights of 1/L): with 0/1 edges
        the sums are exact integers, so clients with equally many correct neighbours tie exactly and the
        tie-breaking rules apply instead of rounding noise from the summation order.
        """
        idx = self.neighbours_of(question_embeddings)
        n = idx.shape[0]
        if self.num_exemplars == 0:
            return torch.zeros(n, len(self._clients))
        weights = torch.zeros(n, self.num_exemplars)
        weights.scatter_(1, idx, 1.0)
        return (weights @ self._correctness.T) * (1.0 / self.neighbours)

    def global_competence(self) -> torch.Tensor:
        """(K,) mean correctness over all exemplars: the tie-breaker and the fallback when E == 0 (zeros)."""
        if self.num_exemplars == 0:
            return torch.zeros(len(self._clients))
        # sum then divide (not mean) so equal 0/1 counts give bit-identical values
        return self._correctness.sum(dim=1) / self.num_exemplars

    def _available_indices(self, available: Sequence[str] | None) -> torch.Tensor:
        if available is None:
            return torch.arange(len(self._clients))
        names = list(available)
        if len(set(names)) != len(names):
            raise ValueError(f"available clients must be unique, got {names}")
        unknown = [c for c in names if c not in self._index]
        if unknown:
            raise KeyError(f"clients not in the confidence graph: {unknown}; known: {self._clients}")
        # graph order, so ties fall to the order of `clients` whatever order `available` came in
        return torch.tensor(sorted(self._index[c] for c in names), dtype=torch.long)

    def rank_indices(
        self,
        question_embeddings: torch.Tensor,
        available: Sequence[str] | None = None,
        epsilon: float = 0.0,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(N x A) graph indices of the available clients, most preferred first; see :meth:`rank`."""
        if not (isinstance(epsilon, int | float) and 0.0 <= epsilon <= 1.0):
            raise ValueError(f"epsilon must be a probability in [0, 1], got {epsilon!r}")
        cols = self._available_indices(available)
        comp = self.competence(question_embeddings)[:, cols]
        n, a = comp.shape
        # Lexicographic order (competence desc, global desc, graph order asc) from two stable sorts:
        # first order the columns by global competence (stable keeps graph order among equals), then
        # stable-sort each row by competence. A row whose competences are all equal keeps the first
        # order, which is the fallback to global competence.
        by_global = torch.sort(self.global_competence()[cols], descending=True, stable=True).indices
        within = torch.sort(comp[:, by_global], dim=1, descending=True, stable=True).indices
        order = cols[by_global][within]
        if epsilon > 0 and n and a:
            explore = torch.rand(n, generator=rng) < epsilon
            n_explore = int(explore.sum())
            if n_explore:
                perms = torch.rand(n_explore, a, generator=rng).argsort(dim=1)
                order[explore] = cols[perms]
        return order

    def rank(
        self,
        question_embeddings: torch.Tensor,
        available: Sequence[str] | None = None,
        epsilon: float = 0.0,
        rng: torch.Generator | None = None,
    ) -> list[list[str]]:
        """Per question, ALL available clients in preference order.

        Order: competence (desc), then global competence (desc), then position in ``clients``. With
        probability ``epsilon`` per question (drawn from ``rng``) the order is instead a uniformly random
        permutation, so clients that look weak still get asked now and then and the online updates can
        correct the graph. Deterministic given the generator's state.
        """
        order = self.rank_indices(question_embeddings, available, epsilon, rng)
        names = self._clients
        return [[names[k] for k in row] for row in order.tolist()]

    # ----------------------------------------------------------------------------- online update
    def update(
        self, client: str, question_embedding: torch.Tensor, agreement: float, rate: float = 0.1
    ) -> None:
        """Move client's edges to the question's L neighbour exemplars towards ``agreement``.

        ``agreement`` is how the client did on the question, e.g. the share of its rewards that agree
        with the other experts'. Exponential moving average per edge:
        ``c[k, j] <- (1 - rate) * c[k, j] + rate * agreement``; a client that keeps disagreeing near
        some exemplars therefore loses routing there, and only there.
        """
        if client not in self._index:
            raise KeyError(f"unknown client {client!r}; the confidence graph has {self._clients}")
        if isinstance(agreement, bool) or not isinstance(agreement, int | float):
            raise ValueError(f"agreement must be a number in [0, 1], got {agreement!r}")
        if math.isnan(agreement) or not 0.0 <= agreement <= 1.0:
            raise ValueError(f"agreement must be in [0, 1], got {agreement!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        q = self._questions(question_embedding)
        if q.shape[0] != 1:
            raise ValueError(f"update takes one question embedding, got {q.shape[0]}")
        idx = self.neighbours_of(q)[0]
        k = self._index[client]
        row = self._correctness[k]
        row[idx] = ((1.0 - rate) * row[idx] + rate * float(agreement)).clamp_(0.0, 1.0)

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the graph to one file atomically (temp file in the same folder, then ``os.replace``),
        so a crash mid-write never leaves a truncated graph where a resumed run would load it."""
        state = {
            "format_version": _FORMAT_VERSION,
            "embeddings": self._embeddings,
            "correctness": self._correctness,
            "clients": list(self._clients),
            "neighbours": self.neighbours,
        }
        with atomic_path(Path(path)) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ConfidenceGraph:
        state: Mapping[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        version = state.get("format_version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported confidence graph format {version!r}")
        graph = cls(state["embeddings"], state["correctness"], list(state["clients"]), state["neighbours"])
        # The stored embeddings are already unit norm; keep them bit-for-bit so routing is identical
        # (normalising again could move the last bit and flip a near-tie among neighbours).
        graph._embeddings = state["embeddings"].to(torch.float32)
        return graph


class ConfidenceGraphSelector(Selector):
    """Route each question to its M most competent available clients by a :class:`ConfidenceGraph`."""

    name = "confidence-graph"

    def __init__(
        self,
        graph: ConfidenceGraph,
        embed: Callable[[list[str]], torch.Tensor],
        epsilon: float = 0.0,
        *,
        seed: int,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.graph = graph
        self.embed = embed
        self.epsilon = float(epsilon)
        self._rng = torch.Generator().manual_seed(seed)
        self._last_embeddings: dict[str, torch.Tensor] = {}  # the latest batch's, for online updates

    def embedding(self, qid: str) -> torch.Tensor:
        """The embedding computed for ``qid`` by the latest :meth:`rank_questions` (not recomputed)."""
        return self._last_embeddings[qid]

    def feedback(self, question: Question, client: str, agreement: float, rate: float) -> bool:
        """Online update: move ``client``'s edges near the question towards its agreement."""
        self.graph.update(client, self.embedding(question.qid), agreement, rate)
        return True

    def competences(self) -> dict[str, float]:
        """Each client's mean edge weight over all exemplars (the graph's global competence)."""
        return dict(zip(self.graph.clients, self.graph.global_competence().tolist(), strict=True))

    def rank_questions(self, questions: Sequence[Question], clients: Sequence[str]) -> dict[str, list[str]]:
        """Full preference order of the available ``clients`` per question id.

        The federation uses it to replace an expert that answers None with the next one. Embeds all
        question texts in one batch and advances the exploration generator, like :meth:`select`.
        """
        if not questions:
            return {}
        embeddings = self.embed([q.question for q in questions])
        orders = self.graph.rank(embeddings, available=clients, epsilon=self.epsilon, rng=self._rng)
        if len(orders) != len(questions):
            raise ValueError(f"embed returned {len(orders)} embeddings for {len(questions)} questions")
        self._last_embeddings = {q.qid: e for q, e in zip(questions, embeddings, strict=True)}
        return {q.qid: order for q, order in zip(questions, orders, strict=True)}

    def select(self, questions: Sequence[Question], clients: Sequence[str], m: int) -> dict[str, list[str]]:
        if not 0 <= m <= len(clients):
            raise ValueError(f"cannot pick M={m} experts from {len(clients)} clients")
        return {qid: order[:m] for qid, order in self.rank_questions(questions, clients).items()}

    def state_dict(self) -> dict:
        """JSON-friendly: the generator state and the graph's (possibly updated) edge weights."""
        return {
            "rng": self._rng.get_state().tolist(),
            "correctness": self.graph.correctness.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.graph.set_correctness(torch.tensor(state["correctness"], dtype=torch.float32))
        self._rng.set_state(torch.tensor(state["rng"], dtype=torch.uint8))
