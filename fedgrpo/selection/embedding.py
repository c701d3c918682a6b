"""The paper's frozen encoder phi: questions and auxiliary exemplars embedded by the server model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fedgrpo.models.loading import inference


def mean_pooled_embedder(
    model: torch.nn.Module, tokenizer: Any, batch_size: int = 32, max_length: int = 256
) -> Callable[[list[str]], torch.Tensor]:
    """The paper's frozen encoder phi: the server causal LM's last hidden state, mean-pooled over the
    attention mask and L2-normalised. Returns ``texts -> (N x hidden) float32 CPU tensor``.

    Texts are right-padded whatever the tokenizer's padding side: a causal model's real tokens never
    attend to later pad tokens and keep their positions, so a text embeds the same alone or in a batch.
    """
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")

    def embed(texts: list[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            hidden = getattr(getattr(model, "config", None), "hidden_size", 0)
            return torch.empty(0, hidden)
        device = next(model.parameters()).device
        chunks = []
        with inference(model, tokenizer, padding_side="right"):
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                ids = enc["input_ids"].to(device)
                mask = enc["attention_mask"].to(device)
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                hidden = out.hidden_states[-1].float()
                w = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
                chunks.append(F.normalize(pooled, dim=1).cpu())
        return torch.cat(chunks)

    return embed
