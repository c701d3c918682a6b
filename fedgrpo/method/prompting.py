"""How a question is asked: the chat prompt with its answer format (read back by
:mod:`fedgrpo.method.answers`).

One short worked example in the chat fixes the answer format for small instruct models (SmolLM2
rarely uses tags zero-shot); there is no long system prompt, because prompt tokens cost step time.
"""

from __future__ import annotations

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


def completion_text(completion: object) -> str:
    """TRL passes completions as plain strings or as chat messages; return the text either way."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")
