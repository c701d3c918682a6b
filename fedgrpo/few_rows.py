"""Decode steps of a few rows: their matmuls in the order that streams the weights.

A decode step multiplies one row per sequence by every weight matrix, so it is nothing but weight
reads. Torch's CPU ``linear`` computes ``x @ W.T`` through MKL's sgemm, which for a handful of rows
reads the weights far below the memory bandwidth; the same product with the weight as the left
operand streams them (``bench/decode_matmul.py`` measures both orders). No library option does
this, so it is written here: for the duration of a ``generate`` call (:mod:`fedgrpo.generation`),
each linear layer, and each unmerged PEFT LoRA layer with its adapter's two thin products, computes
inputs of at most :data:`FEW_ROWS` rows this way. Only the order of float additions changes.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

FEW_ROWS = 8  # up to this many rows a linear layer runs as W @ x.T (bench/decode_matmul.py)

__all__ = ["FEW_ROWS", "few_row_linears"]


@contextmanager
def few_row_linears(model: Any) -> Iterator[None]:
    """For the block, every ``torch.nn.Linear`` of ``model`` on a CPU computes an input of at most
    :data:`FEW_ROWS` rows (a decode step's) as ``W @ x.T``, and so does every unmerged plain LoRA
    layer, its adapter's products included; larger inputs go through their own forward. Each
    layer's ``forward`` is replaced on the instance for the block and restored after.
    """
    linears, loras = _layers(model)
    adapted = [(m, a) for m in loras if (a := _plain_lora_adapters(m)) is not None]
    inside = {id(m) for m, _ in adapted}
    # a LoRA layer that keeps PEFT's forward (merged, say) still calls its base layer
    linears = linears + [m.base_layer for m in loras if id(m) not in inside]
    layers = [
        m
        for m in linears
        if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and "forward" not in vars(m)
    ]
    for layer in layers:
        layer.forward = functools.partial(_few_row_linear, layer)
    for layer, adapters in adapted:
        layer.forward = functools.partial(_few_row_lora, layer, adapters)
    try:
        yield
    finally:
        for layer in layers + [m for m, _ in adapted]:
            del layer.forward


_LAYERS: weakref.WeakKeyDictionary[Any, tuple[list[Any], list[Any]]] = weakref.WeakKeyDictionary()


def _layers(model: Any) -> tuple[list[Any], list[Any]]:
    """``model``'s linear layers outside any LoRA layer, and its LoRA layers: found once per model
    (a PEFT model with five adapters has about 4,000 modules to walk, ~20 ms a call). A layer added
    later is only left unpatched, which is slower, never wrong."""
    found = _LAYERS.get(model)
    if found is None:
        loras = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
        inner = {id(x) for lora in loras for x in lora.modules() if x is not lora}
        linears = [m for m in model.modules() if type(m) is torch.nn.Linear and id(m) not in inner]
        found = _LAYERS[model] = (linears, loras)
    return found


def _plain_lora_adapters(module: Any) -> list[str] | None:
    """The active adapters of an unmerged PEFT LoRA ``Linear`` on a CPU whose forward is exactly
    ``base(x) + B(A(x)) * scaling`` for each (plain LoRA, no dropout in effect, one dtype); None for
    anything else, which keeps its own forward."""
    if not (hasattr(module, "lora_A") and hasattr(module, "base_layer") and "forward" not in vars(module)):
        return None
    base = module.base_layer
    if type(base) is not torch.nn.Linear or base.weight.device.type != "cpu":
        return None
    if module.merged or module.disable_adapters or getattr(module, "lora_variant", {}):
        return None
    adapters = [a for a in module.active_adapters if a in module.lora_A]
    for a in adapters:
        A, B, dropout = module.lora_A[a], module.lora_B[a], module.lora_dropout[a]
        if type(A) is not torch.nn.Linear or type(B) is not torch.nn.Linear or A.bias is not None:
            return None
        if B.bias is not None or A.weight.dtype != base.weight.dtype or B.weight.dtype != base.weight.dtype:
            return None
        if dropout.training and not isinstance(dropout, torch.nn.Identity):
            return None
    return adapters


def _few_row_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // layer.in_features if x.dim() and layer.in_features else 0
    if not 0 < rows <= FEW_ROWS:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    y = torch.mm(layer.weight, x.reshape(rows, layer.in_features).T).T
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*x.shape[:-1], layer.out_features)


def _few_row_lora(
    layer: Any, adapters: list[str], x: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """A LoRA layer's forward for a few rows: the base product as ``W @ x.T`` plus each adapter's
    ``scaling * B @ (A @ x.T)``, the arithmetic of PEFT's own forward without its per-call dispatch;
    anything else goes through PEFT's forward."""
    base = layer.base_layer
    rows = x.numel() // base.in_features if x.dim() and base.in_features else 0
    if args or kwargs or not 0 < rows <= FEW_ROWS or x.dtype != base.weight.dtype:
        return type(layer).forward(layer, x, *args, **kwargs)
    columns = x.reshape(rows, base.in_features).T
    y = torch.mm(base.weight, columns)
    for a in adapters:  # y + scaling * B @ (A @ x.T), the add and the scaling in one call
        y = torch.addmm(
            y, layer.lora_B[a].weight, torch.mm(layer.lora_A[a].weight, columns), alpha=layer.scaling[a]
        )
    y = y.T
    if base.bias is not None:
        y = y + base.bias
    return y.reshape(*x.shape[:-1], base.out_features)
