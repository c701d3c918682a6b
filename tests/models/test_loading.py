"""Where and how the policy is loaded: no Hub kernels, and ``run.device`` resolved as TRL resolves it."""

from __future__ import annotations

import torch

from fedgrpo.models.loading import load_policy, run_device


def test_a_loaded_policy_never_fetches_hub_kernels() -> None:
    # transformers turns them on by default and fetches them at the first forward pass on a GPU: an
    # offline GPU run crashed there (scripts/gpu_check.sh on an H200), so loading turns them off
    assert load_policy("tiny-random").use_kernels is False


def test_cpu_means_the_cpu_and_auto_means_the_accelerator_when_there_is_one() -> None:
    assert run_device("cpu") == torch.device("cpu")
    accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    assert run_device("auto") == (accel or torch.device("cpu"))
