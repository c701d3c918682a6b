"""The one place FedGRPO changes a private TRL name: ``trl.trainer.utils._use_triton``.

What it rebinds: the module global ``_use_triton`` of ``trl.trainer.utils`` (TRL 1.16, the release
``pyproject.toml`` allows: ``trl>=1.16,<1.17``), which TRL imports from ``trl.kernels.chunked_logprob``
and which its fused LM head (``trl.trainer.utils.add_fused_lm_head``, installed by ``GRPOTrainer``)
asks, per forward, whether to project only the positions it scores.

Why: TRL compacts to the labelled positions only on Triton devices; elsewhere it projects every
position through the vocabulary-sized head and zeroes the prompt's afterwards, because compact tile
shapes would make compilers (Neuron) recompile on every batch. Nothing recompiles on the CPU, and
the prompt is most of a row, so that is about 140 GFLOP forward and 280 backward per default step
spent on zeros. The compact path is TRL's own and gives the same numbers
(``tests/accel/test_shared_prefix.py``). Only the head's decision changes: TRL's kernel module keeps its
own ``_use_triton``.

Scope: the whole process, as the decision is a module global read at call time; every trainer made
afterwards sees it until ``score_completions_only(False)`` restores TRL's function. Another TRL
release must be checked before the pin moves: if the name is gone, this raises at the first trainer.
"""

from __future__ import annotations

import functools

import torch


def score_completions_only(enabled: bool = True) -> None:
    """Make TRL's fused LM head project only the positions it scores (the completions) on the CPU too;
    ``enabled=False`` restores TRL's own choice. Installing twice wraps TRL's function once."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils._use_triton, "__wrapped__", trl_utils._use_triton)
    if not enabled:
        trl_utils._use_triton = original
        return

    @functools.wraps(original)
    def compact_on_cpu(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = compact_on_cpu
