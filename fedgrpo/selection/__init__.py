"""Expert selection: which M clients judge each question.

``base`` holds the selector interface, the baselines and the oracle; ``confidence_graph`` the paper's
Module 1 (competence routing over a client x exemplar graph); ``embedding`` the frozen encoder it
routes with; ``factory`` builds any of them by name. The graph is built from competence queries by
:mod:`fedgrpo.server.competence`.
"""

from fedgrpo.selection.base import AllSelector, OracleSelector, RandomSelector, Selector
from fedgrpo.selection.confidence_graph import ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.selection.embedding import mean_pooled_embedder
from fedgrpo.selection.factory import SELECTORS, make_selector

__all__ = [
    "SELECTORS",
    "AllSelector",
    "ConfidenceGraph",
    "ConfidenceGraphSelector",
    "OracleSelector",
    "RandomSelector",
    "Selector",
    "make_selector",
    "mean_pooled_embedder",
]
