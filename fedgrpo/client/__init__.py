"""Client side: private data behind a message boundary (``client``) and the paper's dual evaluation:
answer-based scoring where the client holds the question (``answer_scoring``), the gate (``dual``),
and model-based scoring otherwise, by the agreement rule (``agreement``) of a client model in this
process (``model_scoring``) or behind an OpenAI-compatible endpoint (``endpoint``,
``endpoint_scoring``); each client's own expert model is trained in ``experts``.

Importing this package loads no model library: :class:`ModelEvaluator` (torch, transformers) is
imported on first use, so an answer-only or endpoint-served client stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedgrpo.client.agreement import ScoringSettings
from fedgrpo.client.answer_scoring import AnswerEvaluator, Evaluation
from fedgrpo.client.client import Client, Evaluator
from fedgrpo.client.dual import ClientModel, DualEvaluator, ModelUnavailableError
from fedgrpo.client.endpoint import EndpointError, EndpointModel
from fedgrpo.client.endpoint_scoring import EndpointEvaluator

if TYPE_CHECKING:
    from fedgrpo.client.model_scoring import ModelEvaluator

__all__ = [
    "AnswerEvaluator",
    "Client",
    "ClientModel",
    "DualEvaluator",
    "EndpointError",
    "EndpointEvaluator",
    "EndpointModel",
    "Evaluation",
    "Evaluator",
    "ModelEvaluator",
    "ModelUnavailableError",
    "ScoringSettings",
]


def __getattr__(name: str) -> object:
    """``ModelEvaluator`` on first use: torch and transformers are an optional, heavy dependency of
    in-process client models only (not an import cycle)."""
    if name == "ModelEvaluator":
        from fedgrpo.client.model_scoring import ModelEvaluator

        return ModelEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
