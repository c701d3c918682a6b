"""A client model's linear layers with their weights held in fp16 and multiplied in fp32 (fbgemm).

A client model's work is short generations of a few rows (model scoring, competence answers): each
decode step reads every weight once, so its time is the weights' bytes. fbgemm's fp16-weight GEMM keeps
each weight matrix packed in fp16 and multiplies the fp32 activations with fp32 accumulation: half the
bytes, and on the 2-core AVX2 machine a 3-row decode step of SmolLM2 1.5 to 2x faster and a 30-token
prompt read 2.1 to 2.3x (``bench/experiments/client_weight_formats.py``,
``bench/experiments/scoring_call.py``). The arithmetic changes only by each weight's rounding to fp16
(a relative 2^-11 at most, far inside the Q4_1 GGUF's own quantisation of SmolLM2): 595 of the
default experts' 600 greedy replies come out the same (``bench/client_weights.py``).

Written here because the libraries' routes to it do not pay or are going: torchao's int8 configs ran
slower than fp32 in eager mode on this CPU, and torch.ao's ``quantize_dynamic``, which wraps exactly
these two ops, is deprecated. fbgemm's dynamic int8 is a little faster, but it changed most of the
experts' replies and lowered their accuracy, so it is not offered
(``bench/experiments/client_weight_formats.py``; ``docs/notes/engineering-log.md``, "Tried and not kept").

Inference only: the packed product has no gradient. LoRA layers keep their adapters in fp32 on top of
the packed base (so clients sharing one base still share it), and such a base cannot be merged into.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["Fp16Linear", "fp16_weights_supported", "is_packed", "pack_fp16_weights"]

_PACKED: weakref.WeakSet[Any] = weakref.WeakSet()  # models whose linear layers are packed


class Fp16Linear(torch.nn.Module):
    """``torch.nn.Linear``'s product with the weight (and bias) packed in fp16 for fbgemm."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights=fp16"


def fp16_weights_supported() -> bool:
    """Whether this torch build can pack fp16 weights (fbgemm: x86 CPUs; not ARM builds)."""
    try:
        Fp16Linear(torch.nn.Linear(2, 2))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def is_packed(model: Any) -> bool:
    """Whether :func:`pack_fp16_weights` packed ``model`` (or the model under its PEFT wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else None
    return model in _PACKED or (base is not None and base in _PACKED)


def pack_fp16_weights(model: Any) -> int:
    """Replace, in place, every fp32 ``torch.nn.Linear`` of ``model`` on a CPU by an
    :class:`Fp16Linear`: the LM head and LoRA layers' base layers included, LoRA's own small ``A`` and
    ``B`` left in fp32. Returns how many were packed; 0 (logged) where this torch cannot pack, the model
    then left as it is. Packing a packed model again does nothing."""
    if is_packed(model):
        return 0
    if not fp16_weights_supported():
        log.warning("fp16 weights need fbgemm, which this torch build lacks: client model kept in fp32")
        return 0
    inside_lora = {
        id(x)
        for m in model.modules()
        if hasattr(m, "lora_A") and hasattr(m, "base_layer")
        for name in ("lora_A", "lora_B")
        for x in getattr(m, name).modules()
    }
    packed = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is torch.nn.Linear
                and id(child) not in inside_lora
                and child.weight.device.type == "cpu"
                and child.weight.dtype == torch.float32
            ):
                setattr(parent, name, Fp16Linear(child))
                packed += 1
    if packed:
        _PACKED.add(model)
        log.info("client model: %d linear layers hold their weights in fp16 (clients.weights)", packed)
    return packed
