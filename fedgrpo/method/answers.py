"""Reading answers back: the tag extraction, comparison keys and correctness used by server and clients.

The server asks for the final answer inside ``<answer></answer>``. Clients score it (against their
own answers or their model's), the evaluation and the simulation audit score it against held labels:
all of them read answers through this one module.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from fedgrpo.data import Example, normalise_answer, score_answer

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)

_DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_RATIO_RE = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_MAX_NUMBER_CHARS = 64  # longer "numbers" are compared as strings; keeps Fraction cheap
# A number as written in prose: thousands-grouped ("1,000") before plain, so "1,000" is one number.
_NUMBER_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[+-]?\d+(?:\.\d+)?|[+-]?\.\d+")
# math-verify reads only the end of an untagged completion: the final answer is there, and sympy
# parsing of long text is what can be slow (without a timeout outside the main thread, see below).
_MAX_PARSE_CHARS = 2000


def extract_answer(completion: str) -> str | None:
    """The text of the last <answer>...</answer> block, stripped; None when there is none."""
    found = ANSWER_RE.findall(completion)
    if not found:
        return None
    return found[-1].strip()


def parsed_answer(completion: str) -> str | None:
    """The final answer, or None when there is none or it is empty (nothing to judge)."""
    return extract_answer(completion) or None


def last_number(text: str) -> str | None:
    """The last number written in the text ("1,000" as "1000"), or None when there is none."""
    found = _NUMBER_RE.findall(text)
    return found[-1].replace(",", "") if found else None


def math_verify_answer(text: str) -> str | None:
    """math-verify's final answer in free text (``\\boxed{..}`` first, else the last expression).

    math-verify times its parsing out by SIGALRM, which only the main thread may set (elsewhere it
    raises ValueError): other threads (a Flower ServerApp) parse without the timeout, on the bounded tail.
    """
    try:
        from math_verify import parse

        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        found = parse(text[-_MAX_PARSE_CHARS:], parsing_timeout=timeout)
    except Exception:
        return None
    strings = [f for f in found if isinstance(f, str) and f.strip()]
    if strings:
        return strings[0].strip()
    return str(found[0]) if found else None


def final_answer(completion: str) -> str | None:
    """The final answer wherever the model wrote it, for *answer accuracy* (evaluation only).

    Tried in order, the first that finds one wins:

    1. the tagged answer (non-empty ``<answer>..</answer>``): what strict accuracy and the rewards read,
       so answer accuracy is never below strict accuracy;
    2. math-verify's extraction from the whole completion (``\\boxed{7}``, "so the answer is 42.");
    3. the last number in the completion (when math-verify finds nothing or fails).

    Strict accuracy rewards the format as much as the reasoning; this one asks only whether the right
    answer was given at all, so the gap between them is what answering in tags is worth. Answers that
    are not numbers (Yes/No, names) count only when tagged.
    """
    return parsed_answer(completion) or math_verify_answer(completion) or last_number(completion)


def has_answer_format(completion: str) -> bool:
    """True when the completion carries exactly one non-empty answer block."""
    found = ANSWER_RE.findall(completion)
    return len(found) == 1 and bool(found[0].strip())


def rationale(completion: str) -> str:
    """Everything before the last answer block (the candidate's reasoning)."""
    blocks = list(ANSWER_RE.finditer(completion))
    return completion[: blocks[-1].start()] if blocks else completion


def answer_key(text: str) -> str:
    """A comparison key under which equal answers match: "7", "7.0", " 7. " and "1,000"/"1000".

    Normalised text, with plain decimals, thousands-grouped numbers and integer ratios mapped to
    their exact rational value; everything else compares as normalised text. Deliberately small:
    the full math-verify scorer needs a gold answer, which a model-based client does not have.
    """
    norm = normalise_answer(text).rstrip(".").strip()
    if len(norm) > _MAX_NUMBER_CHARS:
        return norm
    plain = norm.replace(",", "") if _THOUSANDS_RE.fullmatch(norm) else norm
    if _DECIMAL_RE.fullmatch(plain):
        return f"num:{Fraction(plain)}"
    ratio = _RATIO_RE.fullmatch(plain)
    if ratio and int(ratio.group(2)) != 0:
        return f"num:{Fraction(int(ratio.group(1)), int(ratio.group(2)))}"
    return norm


def is_correct(example: Example, completion: str) -> bool:
    """Exact correctness of a completion's tagged answer by the task's own scorer."""
    return score_answer(example, extract_answer(completion)) >= 1.0


DEFAULT_FORMAT_REWARD = 0.1  # federation.format_reward's default, and a local policy's GRPO shaping


def reward_for(correct: float, completion: str, format_reward: float = DEFAULT_FORMAT_REWARD) -> float:
    """A candidate's reward: correctness (1/0 or a model's score) plus the format reward when well tagged.

    Computed where a policy is trained: by the server (and the central baseline) from a client's
    correctness, and by a client training its own expert (or DP-SDA's generator) locally. The format
    reward is a function of the text alone: no client scoring for the server adds it."""
    return correct + (format_reward if has_answer_format(completion) else 0.0)
