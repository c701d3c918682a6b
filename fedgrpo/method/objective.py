"""The federated group-relative objective: from expert rewards to one advantage per candidate.

For one question, ``rewards[k][i]`` is expert k's reward for candidate i (NaN where missing: the
expert could not judge, replied badly, or failed). Four ways to combine:

* ``mean`` (the paper's working reading): normalise each expert's rewards over the candidates it
  scored, ``z_ki = (r_ki - mean_k) / (std_k + eps)``, then average the z over the experts that
  scored candidate i.
* ``pooled``: normalise all of the question's rewards together, then average per candidate.
* ``median`` (robust): normalise per expert as in ``mean``, then take per candidate the median of
  the experts' z (the mean of the two middle values when an even number scored it).
* ``trimmed-mean`` (robust): normalise per expert, then per candidate drop the single lowest and the
  single highest z when three or more experts scored it, and average the rest (fewer than three:
  the plain mean). With three experts it equals the median; with more it averages more of them.

The robust rules bound what one expert can do: with three or more experts scoring a candidate, its
combined z lies between values of the honest experts, so one liar cannot push a candidate past
candidates that every other expert ranks above it. That needs M >= 3 (two honest experts to outvote
one liar); a candidate that fewer than three experts scored falls back to their mean.

Missing rewards are left out of every mean and standard deviation, never counted as zero. A
candidate no expert scored gets advantage 0. Finally the advantages of the scored candidates are
centred, so that every group's advantages sum to zero, as in GRPO. std is the sample standard
deviation and eps is 1e-4, as in TRL's own group normalisation.
"""

from __future__ import annotations

import math

import torch

from fedgrpo.method.aggregation import AGGREGATIONS, MIN_ROBUST_EXPERTS, ROBUST_AGGREGATIONS, Aggregation

EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample standard deviation ignoring NaN (TRL's ``nanstd``), 0 where fewer than two values."""
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    var = sq / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.zeros_like(var))


def _trimmed_mean(z: torch.Tensor) -> torch.Tensor:
    """Per column, the mean of the present values without the lowest and the highest one when there are
    at least three; the plain mean of one or two. NaN if none.

    Hand-written: torch has no trimmed mean, and scipy's ``trim_mean`` cuts a proportion (not exactly
    one value per end whatever the count) and does not skip NaN.
    """
    count = (~torch.isnan(z)).sum(dim=0)
    ordered = torch.sort(torch.nan_to_num(z, nan=math.inf), dim=0).values  # NaN (as inf) last
    rank = torch.arange(z.shape[0]).unsqueeze(1)
    inner = (rank > 0) & (rank < count - 1)
    keep = (rank < count) & (inner | (count < MIN_ROBUST_EXPERTS))
    kept = keep.sum(dim=0)
    total = torch.where(keep, ordered, 0.0).sum(dim=0)
    return torch.where(kept > 0, total / kept.clamp(min=1), math.nan)


def group_advantages(rewards: torch.Tensor, aggregation: Aggregation = "mean") -> torch.Tensor:
    """Advantages for one question's G candidates from an (experts x G) reward matrix with NaN gaps."""
    if rewards.dim() != 2:
        raise ValueError(f"expected an (experts x candidates) matrix, got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.float64)
    g = rewards.shape[1]
    if rewards.shape[0] == 0:
        return torch.zeros(g, dtype=torch.float64)
    if aggregation in ("mean", *ROBUST_AGGREGATIONS):
        mean = torch.nanmean(rewards, dim=1, keepdim=True)
        z = (rewards - mean) / (_nanstd(rewards, dim=1) + EPS)
    elif aggregation == "pooled":
        flat = rewards.reshape(1, -1)
        z = (rewards - torch.nanmean(flat)) / (_nanstd(flat, dim=1) + EPS)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {list(AGGREGATIONS)}")
    scored = (~torch.isnan(z)).any(dim=0)
    if aggregation == "median":  # linear interpolation: the mean of the two middle values when even
        per_candidate = torch.nanquantile(z, 0.5, dim=0)
    elif aggregation == "trimmed-mean":
        per_candidate = _trimmed_mean(z)
    else:
        per_candidate = torch.nanmean(z, dim=0)
    combined = torch.nan_to_num(per_candidate, nan=0.0)  # all-NaN columns -> 0
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
