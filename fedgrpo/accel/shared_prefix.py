"""The training forward with each group's shared prompt read once.

TRL scores a step's ``B = questions x G`` rows (prompt + completion) in one forward and backward pass;
the G rows of a question carry the same prompt, which on the default preset is three quarters of every
row's tokens. Here the backbone (the transformer below the LM head) reads each distinct prefix once,
with gradients, copies its KV cache to the rows that share it (an index select, whose backward sums
the rows' gradients back into the one prefix), reads the rows' remaining tokens on top of that cache,
and returns the hidden states of the whole rows, as before. Positions, masks and the LM head are
untouched, so TRL's log-probabilities and gradients are the same up to float rounding
(``tests/accel/test_shared_prefix.py`` checks both against the plain forward).

No library does this for a training forward: TRL reads every row whole and its own prompt sharing is
for vLLM's generation only. It is installed on the model instance, as TRL's own fused LM head is, and
only acts on a forward that does not ask for a cache (TRL's GRPO loss forwards, SFT on rows that share
a system prompt); generation, which asks for its cache, is left alone.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from fedgrpo.accel.compat import base_model, cache_argument, drop_output_cache, output_cache

log = logging.getLogger(__name__)

__all__ = ["PrefixPlan", "plan_shared_prefix", "share_prompt_prefixes"]

MIN_SHARED_TOKENS = 8  # below this the extra pass costs more than it saves
MIN_SAVING = 0.2  # share only when it saves at least this share of the backbone's tokens
MAX_COMPARED = 50_000_000  # rows x rows x tokens compared to plan; larger batches are read whole


@dataclass(frozen=True)
class PrefixPlan:
    """Read ``length`` leading tokens once for each row in ``first``; ``group[i]`` is row i's reader."""

    length: int
    width: int  # the rows' full length
    first: torch.Tensor
    group: torch.Tensor

    @property
    def tokens(self) -> int:
        """Tokens the backbone reads under this plan."""
        rows, groups = self.group.shape[0], self.first.shape[0]
        return groups * self.length + rows * (self.width - self.length)


def plan_shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> PrefixPlan | None:
    """The shared-prefix length that reads the fewest tokens, and its groups; None when sharing does
    not save at least ``MIN_SAVING`` of them.

    Rows agree on a prefix when their tokens and mask agree; agreeing on the first ``S`` tokens is an
    equivalence, so each candidate ``S`` (a pairwise common-prefix length) splits the rows into groups.
    """
    rows, width = input_ids.shape
    if rows * rows * width > MAX_COMPARED:
        return None
    same = input_ids[:, None, :] == input_ids[None, :, :]
    if attention_mask is not None:
        same &= attention_mask[:, None, :] == attention_mask[None, :, :]
    common = same.int().cumprod(dim=-1).sum(dim=-1)  # (rows, rows): common-prefix lengths
    best: PrefixPlan | None = None
    for length in sorted({min(int(v), width - 1) for v in common.unique()}):
        if length < MIN_SHARED_TOKENS:
            continue
        leader = (common >= length).int().argmax(dim=1)  # each row's first agreeing row
        first, group = torch.unique(leader, return_inverse=True)
        plan = PrefixPlan(length, width, first, group)
        if best is None or plan.tokens < best.tokens:
            best = plan
    if best is None or best.tokens > (1 - MIN_SAVING) * rows * width:
        return None
    return best


def _shared_forward(
    backbone_forward: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    plan: PrefixPlan,
    kwargs: dict[str, Any],
) -> Any:
    """The backbone's output for the full rows, with each group's prefix read once."""
    n = plan.length
    prefix = backbone_forward(
        input_ids=input_ids[plan.first, :n],
        attention_mask=None if attention_mask is None else attention_mask[plan.first, :n],
        use_cache=True,
        **kwargs,
    )
    cache = output_cache(prefix)
    if cache is None:  # a backbone that keeps no cache after all: read the rows whole
        return backbone_forward(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    cache.batch_select_indices(plan.group.to(input_ids.device))
    rest = backbone_forward(
        input_ids=input_ids[:, n:],
        attention_mask=attention_mask,
        use_cache=True,
        **{cache_argument(backbone_forward): cache},
        **kwargs,
    )
    rest.last_hidden_state = torch.cat([prefix.last_hidden_state[plan.group], rest.last_hidden_state], dim=1)
    drop_output_cache(rest)
    return rest


def share_prompt_prefixes(model: Any) -> Any:
    """Install the shared-prefix loss forward on ``model``'s backbone (once); returns ``model``.

    ``model`` may be a PEFT model or a plain causal LM. A backbone the shortcut cannot use (one
    without a KV cache) is left as it is.
    """
    base = base_model(model)
    backbone = getattr(base, "base_model", None)
    if backbone is None or backbone is base or getattr(backbone.forward, "_fedgrpo_shared", False):
        return model
    original = backbone.forward

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        input_ids = kwargs.get("input_ids")
        eligible = (
            not args
            and kwargs.get("use_cache") is not True  # generation asks for its cache
            and kwargs.get("past_key_values") is None
            and kwargs.get("cache") is None
            and kwargs.get("inputs_embeds") is None
            and kwargs.get("position_ids") is None
            and input_ids is not None
            and input_ids.ndim == 2
            and input_ids.shape[0] > 1
            # checkpointed layers keep no cache in training: nothing to share
            and not (backbone.training and getattr(backbone, "gradient_checkpointing", False))
        )
        if eligible:
            mask = kwargs.get("attention_mask")
            plan = plan_shared_prefix(input_ids, mask)
            if plan is not None:
                rest = {
                    k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "use_cache")
                }
                return _shared_forward(original, input_ids, mask, plan, rest)
        return original(*args, **kwargs)

    forward._fedgrpo_shared = True  # type: ignore[attr-defined]
    backbone.forward = forward
    return model
