"""Where a synthetic sample's answer comes from: PE's proposer (``dpsda.answers: proposed``) or the
question itself, solved (``solved``).

Private Evolution makes private *questions*; their answers are whatever the proposing model wrote.
A strong proposer writes mostly right ones; SmolLM2-135M does not (1 of the 32 samples of the
evidence suite's first run was an arithmetic question with its right answer: ``10 - 8 = -2``), so
training on them measures the proposer's arithmetic, not Private Evolution. ``solved`` gives the
baseline right labels where the question states one arithmetic expression: the server evaluates it
and drops the samples that state none. It is an advantage no client paid for and that FedGRPO does
not get (a favourable upper bound on what PE's questions can teach), and post-processing of
released samples, so it costs no privacy. Written by hand because no library reads an arithmetic
question: reasoning-gym's scorers check an answer against a known one, math-verify compares two.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import re
from typing import Literal

from fedgrpo.algorithms.dpsda.private_evolution import Sample

AnswerSource = Literal["proposed", "solved"]

# an integer, then one or more (operator, integer): "45 - 23", "16 * 45", "36 ÷ 4", "3 * 100 * 1"
_EXPRESSION_RE = re.compile(r"(?<![\w.])\d{1,12}(?:\s*[-+*/×÷−]\s*\d{1,12})+(?![\w.]*\d)")
# a yes/no question: the value of its expression is not its answer
_YES_NO_RE = re.compile(r"^\W*(?:is|are|does|do|can|was|were|will)\b", re.IGNORECASE)
_SYMBOLS = str.maketrans({"×": "*", "÷": "/", "−": "-"})
_TIMES_RE = re.compile(r"(?<=\d)\s+[xX]\s+(?=\d)")  # "6 x 5", as the proposer writes it; not "x141"
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def solve_arithmetic(question: str) -> str | None:
    """The value of the one integer expression (``+ - * /``, ``×``, `` x ``, ``÷``) the question
    states, as the task's answers are written (``-1``, ``1247``); None when it states none, more than
    one, or a division that leaves a remainder, or when it asks yes or no ("Is it true that 1 + 1 is 1?")."""
    found = _EXPRESSION_RE.findall(_TIMES_RE.sub(" * ", question))
    if len(found) != 1 or _YES_NO_RE.match(question):
        return None
    try:
        value = _evaluate(ast.parse(found[0].translate(_SYMBOLS), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None
    return str(value)


def _evaluate(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if left % right:
            raise ValueError("not a whole number")
        return left // right
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"not integer arithmetic: {ast.dump(node)}")


def with_answer(sample: Sample, source: AnswerSource) -> Sample:
    """The sample as PE evolves it: ``proposed`` leaves it as written; ``solved`` replaces its answer
    with the question's value (``""`` when there is none: PE then ranks it last and never trains on
    it) and keeps the proposer's in ``proposed``."""
    if source == "proposed":
        return sample
    return dataclasses.replace(sample, answer=solve_arithmetic(sample.question) or "", proposed=sample.answer)
