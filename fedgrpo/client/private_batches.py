"""The rows DP-SGD trains an expert on and each row's own loss (``private_training``'s recipe).

A row is the evaluation prompt followed by ``<answer>...</answer>``; the loss is on the completion
tokens only, averaged per row, so one example's gradient is its own loss's gradient.
"""

from __future__ import annotations

from typing import Any

from fedgrpo.data import Example
from fedgrpo.method.prompting import build_messages

MAX_LENGTH = 512  # tokens per training row, as the SFT trainer's max_length


def training_rows(
    tokenizer: Any, examples: list[Example], worked_example: bool
) -> list[tuple[list[int], int]]:
    """Each example's chat tokens (prompt, then ``<answer>...</answer>``) and where its completion starts."""
    rows = []
    for ex in examples:
        prompt = build_messages(ex.question, worked_example)
        answer = [{"role": "assistant", "content": f"<answer>{ex.answer}</answer>"}]
        start = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
        if full[: len(start)] != start:
            raise ValueError("the chat template does not extend the prompt with the reply; cannot mask it")
        rows.append((full[:MAX_LENGTH], len(start)))
    return rows


def padded_batch(rows: list[tuple[list[int], int]], pad: int) -> tuple[Any, Any, Any]:
    """Right-padded input ids, attention mask and labels (-100 outside the completion)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for k, (tokens, start) in enumerate(rows):
        ids[k, : len(tokens)] = torch.tensor(tokens)
        mask[k, : len(tokens)] = 1
        labels[k, start : len(tokens)] = ids[k, start : len(tokens)]
    return ids, mask, labels


def per_example_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Each row's mean cross-entropy over its completion tokens.

    The LM head (49k words on SmolLM2) runs only from the earliest completion token on, not over the
    prompts: the same loss, several times faster.
    """
    import torch

    answered = (labels != -100).any(0).nonzero()
    first = max(1, int(answered.min())) if len(answered) else 1
    keep = torch.arange(first - 1, ids.size(1) - 1)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    targets = labels[:, first:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view(targets.shape)
    return losses.sum(1) / (targets != -100).sum(1).clamp(min=1)
