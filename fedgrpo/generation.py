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
(:mod:`fedgrpo.few_rows`). At that size the adapter's two thin products cost next to nothing when
computed directly, while merging and unmerging rewrite every weight twice (about 0.15 s for
SmolLM2, the whole decode of a short answer), so a call of few rows leaves the adapter unmerged.

A caller that asks one fixed model many times (a client) passes a :class:`PromptCache`: the prompt
starts its calls share are then read once for all of them.

Nothing here changes what is sampled from, only how fast: ``bench/generation_levers.py`` times each lever.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from fedgrpo import few_rows
from fedgrpo.fp16_weights import is_packed
from fedgrpo.shared_prefix import PrefixPlan, cache_argument, output_cache, plan_shared_prefix

log = logging.getLogger(__name__)

MIN_COMMON_TOKENS = 16  # a shorter common start is not worth its own prefill

__all__ = [
    "PromptCache",
    "fast_generate",
    "generate",
    "is_merged",
    "merged_adapter",
    "speed_up_generation",
]


class PromptCache:
    """The KV caches of the prompt starts of one caller's recent calls, so that a call reads only the
    part of its prompts it does not share with one of them: a client's chat template and system
    prompt, and a question's lead-in that its domain repeats ("State the final answer to the
    following arithmetic problem:"), 35 of a SmolLM2 client's 64 to 71 prompt tokens.

    Like vLLM's automatic prefix caching, for one fixed model in this process: the caches hold for
    the weights they were read with, so the caller's model must not change while it uses them (a
    client's expert, trained before it scores), or it calls :meth:`forget`. Written here because
    transformers' ``generate`` takes one cache per call and keeps none across calls.
    """

    def __init__(self, entries: int = 8) -> None:
        self.entries = entries
        self._caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # prompt start -> its cache

    def matched(self, tokens: torch.Tensor) -> int:
        """How many leading tokens of the 1-D ``tokens`` a kept cache holds (0 when fewer than
        ``MIN_COMMON_TOKENS``: too short to be worth a copy)."""
        return self._best(tuple(tokens.tolist()))[1]

    def prefill(self, model: Any, tokens: torch.Tensor) -> Any:
        """A new cache of the 1-D ``tokens``, reading only what no kept cache holds; keeps a copy."""
        ids = tuple(tokens.tolist())
        key, n = self._best(ids)
        if key is None:
            cache = _prefill(model, input_ids=tokens[None, :])
        else:
            self._caches.move_to_end(key)
            cache = _copy_cache(self._caches[key])
            if n < len(key):  # a negative count removes that many tokens, in every release
                cache.crop(n - len(key))
            if n < len(ids):  # positions follow the cache's length
                _prefill(model, cache, input_ids=tokens[None, n:])
        if ids not in self._caches:
            self._caches[ids] = _copy_cache(cache)
            while len(self._caches) > self.entries:
                self._caches.popitem(last=False)
        return cache

    def forget(self) -> None:
        """Drop every kept cache (the model's weights changed)."""
        self._caches.clear()

    def _best(self, ids: tuple[int, ...]) -> tuple[tuple[int, ...] | None, int]:
        best, length = None, 0
        for key in self._caches:
            n = _shared_length(key, ids)
            if n > length:
                best, length = key, n
        return (best, length) if length >= MIN_COMMON_TOKENS else (None, 0)


def _copy_cache(cache: Any) -> Any:
    """A copy of ``cache`` that the other's later use leaves as it is. A ``DynamicCache``'s layers
    never change their tensors in place (they concatenate, slice and index into new ones), so new
    layer objects over the same tensors suffice; a deep copy of a client's prompt start cost about
    as much as a decode step. Any other cache is copied deeply."""
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not isinstance(layers, list):
        return copy.deepcopy(cache)
    if any(type(layer) is not DynamicLayer for layer in layers):
        return copy.deepcopy(cache)
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in layers]
    return new


def _shared_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@contextmanager
def merged_adapter(model: Any) -> Iterator[None]:
    """The active LoRA adapter merged into the base weights for the block, unmerged after; a no-op for
    a model without one, one already merged, or one whose base weights are packed in fp16 (there is
    nothing to merge into: the adapter's products are added to the base's, :mod:`fedgrpo.fp16_weights`)."""
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
    reads fewer tokens) prefilled once, few-row matmuls as ``W @ x.T`` (:mod:`fedgrpo.few_rows`), and the
    adapter merged when more than ``FEW_ROWS`` rows decode (below, those matmuls add it).

    ``prompts``: the caller's prompt starts kept across calls (:class:`PromptCache`); the rows'
    common start is then read only past what a kept one holds. ``adapter``: the LoRA adapter of a
    PEFT ``model`` to generate with, named to its layers rather than switched on the model where it
    can be (:func:`fedgrpo.few_rows.few_row_linears`); None: the active one.

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
        cache = _prefill(model, input_ids=prefix, attention_mask=mask, position_ids=positions)
        cache.batch_select_indices(plan.group.to(input_ids.device))
        return generate(**kwargs, **{_cache_name(model): cache})


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
    cache = _prefill(model, input_ids=prefix[None, :]) if prompts is None else prompts.prefill(model, prefix)
    if plan is None:
        cache.batch_repeat_interleave(rows)
    else:
        first, end = plan.first.to(input_ids.device), plan.length
        cache.batch_repeat_interleave(first.shape[0])
        group_mask = mask[first, :end]
        positions = (group_mask.long().cumsum(-1) - 1).masked_fill(group_mask == 0, 0)
        _prefill(
            model,
            cache,
            input_ids=ids[first, length:end],
            attention_mask=group_mask,
            position_ids=positions[:, length:end],
        )
        cache.batch_select_indices(plan.group.to(input_ids.device))
    return generate(**{**kwargs, "input_ids": ids, "attention_mask": mask, _cache_name(model): cache})


def _prefill(model: Any, cache: Any = None, **inputs: torch.Tensor) -> Any:
    """Read ``inputs`` into ``cache`` (a new one when None) and return it. Only the KV cache is wanted,
    so the LM head projects one position where the forward allows it, not every prefix token (for a
    competence chunk, 30 prompts of ~70 tokens through a 49,152-wide head would be ~120 GFLOP)."""
    try:
        keeps = "logits_to_keep" in inspect.signature(_base(model).forward).parameters
    except (TypeError, ValueError):
        keeps = False
    extra: dict[str, Any] = {"logits_to_keep": 1} if keeps else {}
    if cache is not None:
        extra[_cache_name(model)] = cache
    with torch.no_grad():
        out = model(**inputs, use_cache=True, **extra)
    return output_cache(out) if cache is None else cache


def _cache_name(model: Any) -> str:
    """The keyword under which this transformers release's ``generate`` takes a cache: ``cache`` where
    the model forwards take it (5.24 on; ``past_key_values`` warns there), else ``past_key_values``."""
    return cache_argument(_base(model).forward)


def _base(model: Any) -> Any:
    """The causal LM under a PEFT wrapper (whose own forward takes ``**kwargs``), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
