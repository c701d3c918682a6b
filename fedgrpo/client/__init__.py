"""Client side: private data and the evaluation of candidates (dual evaluation lives here)."""

from fedgrpo.client.client import Client, Evaluator
from fedgrpo.client.evaluation import AnswerEvaluator, Evaluation

__all__ = ["AnswerEvaluator", "Client", "Evaluation", "Evaluator"]
