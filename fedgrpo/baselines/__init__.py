"""Every method of the paper's comparison behind one name: ``run(cfg, resume) -> results``.

``fedgrpo run CONFIG method=NAME`` and ``fedgrpo suite`` both go through :func:`run_method`, so every
method writes the same run folder and ``results.json`` shape (name, method, before/after accuracy per
domain, communication with ``fed/bytes_down``/``fed/bytes_up``, train_seconds, steps,
seconds_per_step) on the same split, held-out set and seed. A method's module is imported only when it
runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedgrpo.config import METHODS, FedGRPOConfig

# method -> module exposing ``run(cfg, resume=False) -> dict``
MODULES: dict[str, str] = {
    "fedgrpo": "fedgrpo.baselines.federated",
    "zero-shot": "fedgrpo.baselines.zero_shot",
    "central-grpo": "fedgrpo.baselines.central_grpo",
    "fedpetuning": "fedgrpo.baselines.fedpetuning_entry",
    "dpsda-fl": "fedgrpo.baselines.dpsda",
}
assert set(MODULES) == set(METHODS), "every configurable method has a module"


def run_method(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg.method`` into ``cfg.output_dir``; returns its results (also in ``results.json``)."""
    return importlib.import_module(MODULES[cfg.method]).run(cfg, resume=resume)
