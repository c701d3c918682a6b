"""Client side: private data and the evaluation of candidates (dual evaluation lives here)."""

from fedgrpo.client.client import Client, Evaluator
from fedgrpo.client.evaluation import AnswerEvaluator, Evaluation
from fedgrpo.client.model_evaluation import DualEvaluator, ModelEvaluator

__all__ = ["AnswerEvaluator", "Client", "DualEvaluator", "Evaluation", "Evaluator", "ModelEvaluator"]
