"""Expert selection: which M clients judge each question.

``base`` holds the selector interface and the baselines (``random``, ``all``); ``confidence_graph``
holds the paper's Module 1 (competence routing over a client x exemplar graph) and an oracle for
evaluation. Everything is re-exported here so ``from fedgrpo.selection import ...`` keeps working.
"""

from fedgrpo.selection.base import SELECTORS, AllSelector, RandomSelector, Selector, make_selector
from fedgrpo.selection.build import build_confidence_graph
from fedgrpo.selection.confidence_graph import (
    ConfidenceGraph,
    ConfidenceGraphSelector,
    OracleSelector,
    mean_pooled_embedder,
    validate_competence_reply,
)

__all__ = [
    "SELECTORS",
    "AllSelector",
    "ConfidenceGraph",
    "ConfidenceGraphSelector",
    "OracleSelector",
    "RandomSelector",
    "Selector",
    "build_confidence_graph",
    "make_selector",
    "mean_pooled_embedder",
    "validate_competence_reply",
]
