"""Client side: private data behind a message boundary (``client``) and the paper's dual evaluation:
answer-based scoring where the client holds the question (``answer_scoring``), model-based scoring
with its own model otherwise (``model_scoring``), and each client's own expert model (``experts``)."""

from fedgrpo.client.answer_scoring import AnswerEvaluator, Evaluation
from fedgrpo.client.client import Client, Evaluator
from fedgrpo.client.model_scoring import DualEvaluator, ModelEvaluator

__all__ = ["AnswerEvaluator", "Client", "DualEvaluator", "Evaluation", "Evaluator", "ModelEvaluator"]
