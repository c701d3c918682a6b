"""Decode steps of a few rows: their matmuls in the order that streams the weights.

A decode step multiplies one row per sequence by every weight matrix, so it is nothing but weight
reads. Torch's CPU ``linear`` computes ``x @ W.T`` through MKL's sgemm, which for a handful of rows
reads the weights far below the memory bandwidth; the same product with the weight as the left
operand streams them (``bench/experiments/decode_matmul.py`` measures both orders). No library option
does this, so it is written here: for the duration of a ``generate`` call (:mod:`fedgrpo.accel.generation`),
each linear layer, and each unmerged PEFT LoRA layer with its adapter's two thin products, computes
inputs of at most :data:`FEW_ROWS` rows this way. Only the order of float additions changes. A base
layer whose weights are packed in fp16 (:mod:`fedgrpo.accel.fp16_weights`) keeps its own product; its LoRA
adapter's products are added the same way.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from fedgrpo.accel.fp16_weights import Fp16Linear, is_packed

FEW_ROWS = 8  # up to this many rows a linear layer runs as W @ x.T (bench/experiments/decode_matmul.py)

__all__ = ["FEW_ROWS", "activate", "few_row_linears"]


@contextmanager
def few_row_linears(model: Any, adapter: str | None = None) -> Iterator[None]:
    """For the block, every ``torch.nn.Linear`` of ``model`` on a CPU computes an input of at most
    :data:`FEW_ROWS` rows (a decode step's) as ``W @ x.T``, and every unmerged plain LoRA layer adds
    its adapter's products itself (``W @ x.T`` style at few rows, PEFT's arithmetic above), without
    PEFT's per-call dispatch; other layers keep their own forward. Each layer's ``forward`` is
    replaced on the instance for the block and restored after.

    ``adapter``: the LoRA adapter the block computes with (a client's, on a base its clients share),
    handed to each of these layers instead of switched on the model: PEFT's ``set_adapter`` walks
    every module (about 4,000 with five adapters: about 16 ms a switch, in a run whose clients
    take turns). Where a LoRA layer keeps PEFT's forward, it is switched after all (:func:`activate`).
    """
    linears, loras = _layers(model)
    adapted = [(m, a) for m in loras if (a := _plain_lora_adapters(m, adapter)) is not None]
    if len(adapted) < len(loras):
        activate(model, adapter)  # PEFT's own forward computes with the model's active adapter
    inside = {id(m) for m, _ in adapted}
    # a LoRA layer that keeps PEFT's forward (merged, say) still calls its base layer
    linears = linears + [m.base_layer for m in loras if id(m) not in inside]
    layers = [m for m in linears if _plain_linear(m) and "forward" not in vars(m)]
    switch = functools.partial(activate, model, adapter)  # for a call PEFT's forward must take
    for layer in layers:
        layer.forward = functools.partial(_few_row_linear, layer)
    for layer, adapters in adapted:
        layer.forward = functools.partial(_few_row_lora, layer, adapters, switch)
    try:
        yield
    finally:
        for layer in layers + [m for m, _ in adapted]:
            del layer.forward


def activate(model: Any, adapter: str | None) -> None:
    """Make ``adapter`` the active one of a PEFT ``model`` (nothing for None, or when it already is)."""
    if adapter is not None and getattr(model, "active_adapter", None) != adapter:
        model.set_adapter(adapter)


_LAYERS: weakref.WeakKeyDictionary[Any, tuple[bool, list[Any], list[Any]]] = weakref.WeakKeyDictionary()


def _layers(model: Any) -> tuple[list[Any], list[Any]]:
    """``model``'s linear layers outside any LoRA layer, and its LoRA layers: found once per model
    (a PEFT model with five adapters has about 4,000 modules to walk, ~20 ms a call), and again once
    its weights are packed in fp16 (:mod:`fedgrpo.accel.fp16_weights` replaces the layers). A layer added
    otherwise later is only left unpatched, which is slower, never wrong."""
    packed = is_packed(model)
    found = _LAYERS.get(model)
    if found is None or found[0] != packed:
        loras = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
        inner = {id(x) for lora in loras for x in lora.modules() if x is not lora}
        linears = [m for m in model.modules() if type(m) is torch.nn.Linear and id(m) not in inner]
        found = _LAYERS[model] = (packed, linears, loras)
    return found[1], found[2]


def _plain_lora_adapters(module: Any, adapter: str | None = None) -> list[str] | None:
    """The adapters an unmerged PEFT LoRA ``Linear`` on a CPU computes with (its active ones, or
    ``adapter`` alone: none where this layer has no such adapter) when its forward is exactly
    ``base(x) + B(A(x)) * scaling`` for each (plain LoRA, no dropout in effect, one dtype); None for
    anything else, which keeps its own forward."""
    if not (hasattr(module, "lora_A") and hasattr(module, "base_layer") and "forward" not in vars(module)):
        return None
    base = module.base_layer
    if type(base) is Fp16Linear:  # fp16 weights: a CPU product of fp32 inputs
        dtype = torch.float32
    elif _plain_linear(base):
        dtype = base.weight.dtype
    else:
        return None
    if module.merged or module.disable_adapters or getattr(module, "lora_variant", {}):
        return None
    names = module.active_adapters if adapter is None else [adapter]
    adapters = [a for a in names if a in module.lora_A]
    for a in adapters:
        A, B, dropout = module.lora_A[a], module.lora_B[a], module.lora_dropout[a]
        if type(A) is not torch.nn.Linear or type(B) is not torch.nn.Linear or A.bias is not None:
            return None
        if B.bias is not None or A.weight.dtype != dtype or B.weight.dtype != dtype:
            return None
        if dropout.training and not isinstance(dropout, torch.nn.Identity):
            return None
    return adapters


def _plain_linear(layer: Any) -> bool:
    """A ``torch.nn.Linear`` on a CPU whose weight is a plain tensor: not one a quantisation library
    wrapped in its own tensor subclass (torchao's), whose products only its own kernels compute."""
    return (
        type(layer) is torch.nn.Linear
        and type(layer.weight.data) is torch.Tensor
        and layer.weight.device.type == "cpu"
    )


def _few_row_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // layer.in_features if x.dim() and layer.in_features else 0
    if not 0 < rows <= FEW_ROWS:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    y = torch.mm(layer.weight, x.reshape(rows, layer.in_features).T).T
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*x.shape[:-1], layer.out_features)


def _few_row_lora(
    layer: Any, adapters: list[str], switch: Any, x: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """A plain LoRA layer's forward: the base product plus each adapter's ``scaling * B @ (A @ x)``,
    the arithmetic of PEFT's own forward without its per-call dispatch; at few rows in the order that
    streams the weights (``W @ x.T``; a base packed in fp16 keeps its own product). A call with other
    arguments or another dtype goes through PEFT's forward, after ``switch`` has made the adapters
    the model's active ones."""
    base = layer.base_layer
    packed = type(base) is Fp16Linear
    rows = x.numel() // base.in_features if x.dim() and base.in_features else 0
    if args or kwargs or not rows or x.dtype != (torch.float32 if packed else base.weight.dtype):
        switch()
        return type(layer).forward(layer, x, *args, **kwargs)
    inputs = x.reshape(rows, base.in_features)
    if rows > FEW_ROWS:  # rows as they come: y = base(x) + scaling * (x @ A.T) @ B.T
        y = base(inputs) if packed else torch.nn.functional.linear(inputs, base.weight, base.bias)
        for a in adapters:
            down = torch.mm(inputs, layer.lora_A[a].weight.T)
            y = torch.addmm(y, down, layer.lora_B[a].weight.T, alpha=layer.scaling[a])
        return y.reshape(*x.shape[:-1], base.out_features)
    columns = inputs.T
    # the base product as columns: W @ x.T, or an fp16 base's own (bias included) transposed
    y = base(inputs).T if packed else torch.mm(base.weight, columns)
    for a in adapters:  # y + scaling * B @ (A @ x.T), the add and the scaling in one call
        y = torch.addmm(
            y, layer.lora_B[a].weight, torch.mm(layer.lora_A[a].weight, columns), alpha=layer.scaling[a]
        )
    y = y.T
    if not packed and base.bias is not None:
        y = y + base.bias
    return y.reshape(*x.shape[:-1], base.out_features)
