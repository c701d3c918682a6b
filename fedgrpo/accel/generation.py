"""Faster sampling with the libraries' own machinery: a shared prompt read once, LoRA merged for the call.

A GRPO step samples G completions of each question, so TRL hands ``generate`` every prompt G times;
a client model samples its own answers the same way. Reading (prefilling) the same prompt G times is
most of the arithmetic of a short generation on a CPU (16 rows of ~110 prompt tokens against 40 new
tokens). Here each distinct prompt is prefilled once, its KV cache is copied to its duplicates
(transformers' ``Cache.batch_select_indices``) and ``generate`` continues from that cache, which it
supports for prompt reuse. Rows that all differ but start alike (an evaluation's questions after the
same worked example) get their common start prefilled once instead, whichever reads fewer tokens.
The new tokens come back as without the cache, in the same order; only the arithmetic differs (float
rounding). With a common start, a row's prompt part comes back with its padding moved after that
start, so callers read the new tokens after the prompt's length, as TRL and this package do.

A PEFT LoRA model adds two small matmuls and Python dispatch to every linear layer at every decoded
token; for a call of many rows the adapter is merged into the base weights (PEFT's ``merge_adapter``)
and unmerged afterwards, so training still sees the separate adapter. Models are used one call at a
time (the in-process clients take turns on their shared base), which merging requires.

A decode step of a few rows is all weight reads, and torch's CPU ``linear`` reads them slowly at that
size; for the call, such layers compute the same product in the order that streams the weights
(:mod:`fedgrpo.accel.few_rows`). At that size the adapter's two thin products cost next to nothing when
computed directly, while merging and unmerging rewrite every weight twice (about 0.15 s for
SmolLM2, the whole decode of a short answer), so a call of few rows leaves the adapter unmerged.

A caller that asks one fixed model many times (a client) passes a
:class:`~fedgrpo.accel.prompt_cache.PromptCache`: the prompt starts its calls share are then read once for
all of them.

Nothing here changes what is sampled from, only how fast: ``bench/experiments/generation_levers.py``
times each lever.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from fedgrpo.accel import few_rows, prompt_cache
from fedgrpo.accel.compat import cache_name
from fedgrpo.accel.fp16_weights import is_packed
from fedgrpo.accel.prompt_cache import MIN_COMMON_TOKENS, PromptCache
from fedgrpo.accel.shared_prefix import PrefixPlan, plan_shared_prefix

log = logging.getLogger(__name__)

__all__ = [
    "fast_generate",
    "generate",
    "is_merged",
    "merged_adapter",
    "speed_up_generation",
]


@contextmanager
def merged_adapter(model: Any) -> Iterator[None]:
    """The active LoRA adapter merged into the base weights for the block, unmerged after; a no-op for
    a model without one, one already merged, or one whose base weights are packed in fp16 (there is
    nothing to merge into: the adapter's products are added to the base's,
    :mod:`fedgrpo.accel.fp16_weights`)."""
    if _mergeable(model) and not is_merged(model):
        model.merge_adapter()
        try:
            yield
        finally:
            model.unmerge_adapter()
    else:
        yield


def _mergeable(model: Any) -> bool:
    return hasattr(model, "merge_adapter") and hasattr(model, "peft_config") and not is_packed(model)


def is_merged(model: Any) -> bool:
    """Whether any of a PEFT model's adapter layers is merged into its base weights."""
    return any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))


def fast_generate(
    generate: Callable[..., Any],
    model: Any,
    *args: Any,
    prompts: PromptCache | None = None,
    adapter: str | None = None,
    **kwargs: Any,
) -> Any:
    """``generate(*args, **kwargs)`` with each distinct prompt (or the prompts' common start, whichever
    reads fewer tokens) prefilled once, few-row matmuls as ``W @ x.T`` (:mod:`fedgrpo.accel.few_rows`), and
    the
    adapter merged when more than ``FEW_ROWS`` rows decode (below, those matmuls add it).

    ``prompts``: the caller's prompt starts kept across calls (:class:`PromptCache`); the rows'
    common start is then read only past what a kept one holds. ``adapter``: the LoRA adapter of a
    PEFT ``model`` to generate with, named to its layers rather than switched on the model where it
    can be (:func:`fedgrpo.accel.few_rows.few_row_linears`); None: the active one.

    Falls back to a plain call, with the same adapter handling, whenever the shortcut does not apply: no
    duplicate prompts and no common start, a cache or embeddings passed in, positional inputs, or an
    encoder-decoder model.
    """
    input_ids = kwargs.get("input_ids")
    attention_mask = kwargs.get("attention_mask")
    plain = (
        args
        or input_ids is None
        or input_ids.ndim != 2
        or input_ids.shape[1] < 2
        or kwargs.get("past_key_values") is not None
        or kwargs.get("cache") is not None
        or "inputs_embeds" in kwargs
        or getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    )
    # few rows: the adapter's products are computed in the decode steps (few_row_linears), not merged
    merge = _decoded_rows(kwargs) > few_rows.FEW_ROWS and _mergeable(model)
    if merge:
        few_rows.activate(model, adapter)  # merging merges the active adapter
    with merged_adapter(model) if merge else nullcontext(), few_rows.few_row_linears(model, adapter):
        if plain:
            return generate(*args, **kwargs)
        # Rows grouped by the prefix they share, as the loss forward groups them (at most all but
        # the last prompt token, which generate reads itself): duplicates share their whole prompt.
        plan = plan_shared_prefix(input_ids, attention_mask)
        rows, width = input_ids.shape
        common = None if attention_mask is None else _common_prefix(input_ids, attention_mask)
        # tokens prefilled: each group's prefix once, or the common start once and every row's rest,
        # or both: the common start once, then each group's rest of its prefix once
        grouped = plan.tokens if plan is not None else rows * width
        if common is not None:
            start = common[0]
            read = start - (prompts.matched(common[1]) if prompts is not None else 0)  # by this call
            after_common = read + rows * (width - start)
            if plan is not None and plan.length > start:
                groups = plan.first.shape[0]
                both = read + groups * (plan.length - start) + rows * (width - plan.length)
                if both < min(grouped, after_common):
                    return _generate_after_common_prefix(generate, model, common, kwargs, plan, prompts)
            # a tie goes to this path when it keeps the start for the caller's later calls
            if after_common < grouped or (prompts is not None and after_common == grouped):
                return _generate_after_common_prefix(generate, model, common, kwargs, None, prompts)
        if plan is None:
            return generate(**kwargs)
        prefix = input_ids[plan.first, : plan.length]
        mask = None if attention_mask is None else attention_mask[plan.first, : plan.length]
        positions = None
        if mask is not None:  # the positions generate itself gives left-padded rows
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = prompt_cache.prefill(model, input_ids=prefix, attention_mask=mask, position_ids=positions)
        cache.batch_select_indices(plan.group.to(input_ids.device))
        return generate(**kwargs, **{cache_name(model): cache})


def _decoded_rows(kwargs: dict[str, Any]) -> float:
    """How many rows each decode step of this ``generate`` call runs (inf when it cannot tell)."""
    input_ids = kwargs.get("input_ids")
    if input_ids is None or input_ids.ndim != 2:
        return float("inf")
    config = kwargs.get("generation_config")
    per_prompt = 1
    for name in ("num_return_sequences", "num_beams"):
        value = kwargs.get(name, getattr(config, name, None))
        per_prompt *= int(value or 1)
    return input_ids.shape[0] * per_prompt


def _common_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[int, torch.Tensor] | None:
    """For left-padded rows: the length of the token run every row starts with (its padding aside),
    at most each row's length minus one, and that run; None when it is under ``MIN_COMMON_TOKENS``
    or the padding is not all on the left."""
    rows, width = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    starts = width - lengths
    columns = torch.arange(width, device=input_ids.device)
    if not torch.equal(attention_mask.bool(), columns[None, :] >= starts[:, None]):
        return None
    shortest = int(lengths.min())
    aligned = input_ids.gather(1, starts[:, None] + columns[None, :shortest])
    differs = (aligned != aligned[:1]).any(dim=0).nonzero()
    length = min(int(differs[0]) if differs.numel() else shortest, shortest - 1)
    if length < MIN_COMMON_TOKENS:
        return None
    return length, aligned[0, :length]


def _generate_after_common_prefix(
    generate: Callable[..., Any],
    model: Any,
    common: tuple[int, torch.Tensor],
    kwargs: dict[str, Any],
    plan: PrefixPlan | None = None,
    prompts: PromptCache | None = None,
) -> Any:
    """Prefill the rows' common start once, then generate every row from a copy of its cache.

    Each row is laid out as the common start, then its left padding, then the rest of its prompt:
    the same length, the same tokens, the same positions (generate counts them from the mask), and
    masked padding attends to nothing wherever it sits. Only the new tokens are read back by callers.
    With a ``plan`` whose prefix is longer than the common start (a client's competence chunk: each
    question's prompt ``samples`` times, all after the same worked example), each group's rest of
    that prefix is read once on top of the common start before the cache is copied to its rows.
    Identical rows stay identical in this layout, so the plan's groups hold in it. With ``prompts``,
    the common start is read only past what a kept cache holds (:class:`PromptCache`).
    """
    length, prefix = common
    input_ids, attention_mask = kwargs["input_ids"], kwargs["attention_mask"]
    rows, width = input_ids.shape
    starts = width - attention_mask.sum(dim=1)
    columns = torch.arange(width, device=input_ids.device)
    gap = (columns[None, :] >= length) & (columns[None, :] < starts[:, None] + length)
    ids, mask = input_ids.clone(), attention_mask.clone()
    ids[:, :length] = prefix
    mask[:, :length] = 1
    ids[gap] = input_ids[0, 0] if bool(starts[0] > 0) else 0  # a masked filler
    mask[gap] = 0
    cache = (
        prompt_cache.prefill(model, input_ids=prefix[None, :])
        if prompts is None
        else prompts.prefill(model, prefix)
    )
    if plan is None:
        cache.batch_repeat_interleave(rows)
    else:
        first, end = plan.first.to(input_ids.device), plan.length
        cache.batch_repeat_interleave(first.shape[0])
        group_mask = mask[first, :end]
        positions = (group_mask.long().cumsum(-1) - 1).masked_fill(group_mask == 0, 0)
        prompt_cache.prefill(
            model,
            cache,
            input_ids=ids[first, length:end],
            attention_mask=group_mask,
            position_ids=positions[:, length:end],
        )
        cache.batch_select_indices(plan.group.to(input_ids.device))
    return generate(**{**kwargs, "input_ids": ids, "attention_mask": mask, cache_name(model): cache})


def generate(
    model: Any,
    share_prompts: bool = True,
    prompts: PromptCache | None = None,
    adapter: str | None = None,
    **kwargs: Any,
) -> Any:
    """``model.generate(**kwargs)`` with the LoRA ``adapter`` of a PEFT ``model`` (None: the active one),
    through :func:`fast_generate` (with ``prompts``) when ``share_prompts`` (``run.share_prompts``)."""
    if share_prompts:
        return fast_generate(model.generate, model, prompts=prompts, adapter=adapter, **kwargs)
    few_rows.activate(model, adapter)
    return model.generate(**kwargs)


def speed_up_generation(model: Any) -> Any:
    """Route ``model.generate`` through :func:`fast_generate` (once; returns the model).

    TRL's ``GRPOTrainer`` calls the policy's own ``generate``; replacing it on the instance is how its
    sampling gets the shortcut without overriding any of TRL's private methods.
    """
    if getattr(model.generate, "_fedgrpo_fast", False):
        return model
    original = model.generate

    @functools.wraps(original)
    def generate(*args: Any, **kwargs: Any) -> Any:
        return fast_generate(original, model, *args, **kwargs)

    generate._fedgrpo_fast = True  # type: ignore[attr-defined]
    model.generate = generate
    return model
