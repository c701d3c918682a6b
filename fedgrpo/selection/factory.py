"""The one factory for every selector, by its config name."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedgrpo.selection.base import AllSelector, OracleSelector, RandomSelector, Selector
from fedgrpo.selection.confidence_graph import ConfidenceGraph, ConfidenceGraphSelector

SELECTORS = ("random", "all", "confidence-graph", "oracle")


def make_selector(
    name: str,
    *,
    seed: int = 0,
    graph: ConfidenceGraph | None = None,
    embed: Callable[[list[str]], torch.Tensor] | None = None,
    epsilon: float = 0.0,
    client_domains: dict[str, dict[str, int]] | None = None,
) -> Selector:
    """Every selector by its config name; each says which of its inputs is missing."""
    if name == "random":
        return RandomSelector(seed)
    if name == "all":
        return AllSelector()
    if name == "confidence-graph":
        if graph is None or embed is None:
            raise ValueError("the confidence-graph selector needs a built graph and the question embedder")
        return ConfidenceGraphSelector(graph, embed, epsilon, seed=seed)
    if name == "oracle":
        if client_domains is None:
            raise ValueError("the oracle selector needs each client's domain counts (simulation only)")
        return OracleSelector(client_domains)
    raise ValueError(f"unknown selector {name!r}; choose one of {list(SELECTORS)}")
