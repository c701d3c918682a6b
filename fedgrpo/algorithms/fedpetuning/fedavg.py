"""FedAvg over LoRA adapter tensors, and what an adapter costs on the wire.

In process there is no Flower, so the average is computed here; it is the same arithmetic as Flower's
``aggregate_arrayrecords`` (weights normalised by their sum, each client's float32 tensors scaled by
its weight and summed in reply order), and a test checks the two agree on the same updates. Flower is
an optional extra, hence a few lines of our own rather than an import.

Sizes are those of Flower's ``ArrayRecord``: each tensor as float32 in NumPy's ``.npy`` format (what
``Array.from_numpy_ndarray`` stores) plus its key, i.e. ``ArrayRecord.count_bytes()``. Where Flower
is installed its own count is used; otherwise the same ``.npy`` serialisation is measured here.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch

AdapterState = dict[str, torch.Tensor]


def to_wire(state: Mapping[str, torch.Tensor]) -> AdapterState:
    """A detached float32 CPU copy: what a client or the server sends (bfloat16 has no NumPy type)."""
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}


def weighted_average(updates: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> AdapterState:
    """FedAvg: ``sum_i w_i / sum_j w_j * update_i`` per tensor, in float32 (``w``: examples held)."""
    if not updates:
        raise ValueError("FedAvg needs at least one client update")
    total = sum(w for _, w in updates)
    if total <= 0:
        raise ValueError(f"FedAvg weights must sum to a positive number, got {total}")
    keys = set(updates[0][0])
    out: AdapterState = {}
    for state, weight in updates:
        if set(state) != keys:
            raise ValueError("client updates hold different adapter tensors")
        factor = weight / total
        for key, value in state.items():
            scaled = value.to(torch.float32) * factor
            out[key] = scaled if key not in out else out[key] + scaled
    return out


def wire_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of ``state`` as a Flower ``ArrayRecord`` (``count_bytes``: ``.npy`` data plus keys)."""
    wire = to_wire(state)
    try:
        from flwr.app import ArrayRecord
    except ImportError:  # no flower extra: measure the same .npy serialisation Flower would store
        return sum(_npy_bytes(v.numpy()) + len(k) for k, v in wire.items())
    return ArrayRecord.from_torch_state_dict(wire).count_bytes()


def _npy_bytes(array: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.tell()


def update_problem(update: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str | None:
    """Why a client's adapter cannot enter the average (other tensors, shapes, or non-finite values),
    or None. One bad reply is dropped and counted; it never stops the server or poisons the mean."""
    if set(update) != set(reference):
        missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
        return f"other adapter tensors (missing {missing[:2]}, unexpected {extra[:2]})"
    for key, value in update.items():
        if tuple(value.shape) != tuple(reference[key].shape):
            return f"{key} has shape {tuple(value.shape)}, expected {tuple(reference[key].shape)}"
        if not torch.isfinite(value).all():
            return f"{key} holds non-finite values"
    return None
