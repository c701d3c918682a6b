"""The federated group-relative objective: from expert rewards to one advantage per candidate.

For one question, ``rewards[k][i]`` is expert k's reward for candidate i (NaN where missing: the
expert could not judge, replied badly, or failed). Two ways to combine:

* ``mean`` (the paper's working reading): normalise each expert's rewards over the candidates it
  scored, ``z_ki = (r_ki - mean_k) / (std_k + eps)``, then average the z over the experts that
  scored candidate i.
* ``pooled``: normalise all of the question's rewards together, then average per candidate.

Missing rewards are left out of every mean and standard deviation, never counted as zero. A
candidate no expert scored gets advantage 0. Finally the advantages of the scored candidates are
centred, so that every group's advantages sum to zero, as in GRPO. std is the sample standard
deviation and eps is 1e-4, as in TRL's own group normalisation.
"""

from __future__ import annotations

from typing import Literal

import torch

EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample standard deviation ignoring NaN (TRL's ``nanstd``), 0 where fewer than two values."""
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    var = sq / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.zeros_like(var))


def group_advantages(rewards: torch.Tensor, aggregation: Literal["mean", "pooled"] = "mean") -> torch.Tensor:
    """Advantages for one question's G candidates from an (experts x G) reward matrix with NaN gaps."""
    if rewards.dim() != 2:
        raise ValueError(f"expected an (experts x candidates) matrix, got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.float64)
    g = rewards.shape[1]
    if rewards.shape[0] == 0:
        return torch.zeros(g, dtype=torch.float64)
    if aggregation == "mean":
        mean = torch.nanmean(rewards, dim=1, keepdim=True)
        z = (rewards - mean) / (_nanstd(rewards, dim=1) + EPS)
    elif aggregation == "pooled":
        flat = rewards.reshape(1, -1)
        z = (rewards - torch.nanmean(flat)) / (_nanstd(flat, dim=1) + EPS)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose 'mean' or 'pooled'")
    scored = (~torch.isnan(z)).any(dim=0)
    combined = torch.nan_to_num(torch.nanmean(z, dim=0), nan=0.0)  # all-NaN columns -> 0
    if scored.any():
        combined = torch.where(scored, combined - combined[scored].mean(), 0.0)
    return combined


def zero_spread(rewards: torch.Tensor) -> bool:
    """True when no expert's rewards for this question vary: GRPO gets no signal from it."""
    for row in rewards:
        vals = row[~torch.isnan(row)]
        if vals.numel() > 1 and float(vals.max() - vals.min()) > 0:
            return False
    return True
