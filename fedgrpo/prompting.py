"""How the server asks a question and how anyone reads the answer back.

One short worked example in the chat fixes the answer format for small instruct models (SmolLM2
rarely uses tags zero-shot); there is no long system prompt, because prompt tokens cost step time.
"""

from __future__ import annotations

import re

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)

INSTRUCTION = "Think briefly, then give the final answer inside <answer></answer>."
WORKED_EXAMPLE = (
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "3 + 4 = 7. <answer>7</answer>",
)


def build_messages(question: str, worked_example: bool = True) -> list[dict[str, str]]:
    """Chat messages for one question: an optional worked example, then the question."""
    messages: list[dict[str, str]] = []
    if worked_example:
        q, a = WORKED_EXAMPLE
        messages += [
            {"role": "user", "content": f"{q}\n{INSTRUCTION}"},
            {"role": "assistant", "content": a},
        ]
    messages.append({"role": "user", "content": f"{question}\n{INSTRUCTION}"})
    return messages


def extract_answer(completion: str) -> str | None:
    """The text of the last <answer>...</answer> block, stripped; None when there is none."""
    found = ANSWER_RE.findall(completion)
    if not found:
        return None
    return found[-1].strip()


def has_answer_format(completion: str) -> bool:
    """True when the completion carries exactly one non-empty answer block."""
    found = ANSWER_RE.findall(completion)
    return len(found) == 1 and bool(found[0].strip())


def completion_text(completion: object) -> str:
    """TRL passes completions as plain strings or as chat messages; return the text either way."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")
