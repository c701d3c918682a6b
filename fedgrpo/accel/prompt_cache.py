"""A client's prompt starts kept across its calls, and the prefill that reads a prompt into a KV cache.

A client asks its one fixed model many times, and its prompts share the chat template, the system
prompt and, within a domain, the question's lead-in: :class:`PromptCache` keeps the KV caches of its
recent prompt starts, so each call reads only the part no kept start holds
(:func:`fedgrpo.accel.generation.fast_generate` takes it). :func:`prefill` is the one way this package reads
tokens into a cache, for the prompt cache and for the generation shortcut alike.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from fedgrpo.accel.compat import cache_name, output_cache, takes_logits_to_keep

MIN_COMMON_TOKENS = 16  # a shorter common start is not worth its own prefill

__all__ = ["MIN_COMMON_TOKENS", "PromptCache", "prefill"]


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
            cache = prefill(model, input_ids=tokens[None, :])
        else:
            self._caches.move_to_end(key)
            cache = _copy_cache(self._caches[key])
            if n < len(key):  # a negative count removes that many tokens, in every release
                cache.crop(n - len(key))
            if n < len(ids):  # positions follow the cache's length
                prefill(model, cache, input_ids=tokens[None, n:])
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


def prefill(model: Any, cache: Any = None, **inputs: torch.Tensor) -> Any:
    """Read ``inputs`` into ``cache`` (a new one when None) and return it. Only the KV cache is wanted,
    so the LM head projects one position where the forward allows it, not every prefix token (for a
    competence chunk, 30 prompts of ~70 tokens through a 49,152-wide head would be ~120 GFLOP)."""
    extra: dict[str, Any] = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    if cache is not None:
        extra[cache_name(model)] = cache
    with torch.no_grad():
        out = model(**inputs, use_cache=True, **extra)
    return output_cache(out) if cache is None else cache
