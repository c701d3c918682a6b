"""Every method of the paper's comparison behind one name: ``run(cfg, resume) -> results``.

``fedgrpo run CONFIG method=NAME`` and ``fedgrpo suite`` both go through :func:`run_method`, so every
method writes the same run folder and ``results.json`` shape (name, method, before/after accuracy per
domain, communication with ``fed/bytes_down``/``fed/bytes_up``, train_seconds, steps,
seconds_per_step) on the same split, held-out set and seed. A method's module is imported only when it
runs; a baseline with a Flower run has a module of its own for it, picked by ``federation.transport``
(the Flower apps use the in-process run's pieces, so neither imports the other).
"""

from __future__ import annotations

import importlib
from typing import Any

from fedgrpo.config import METHODS, FedGRPOConfig

# method -> module exposing ``run(cfg, resume=False) -> dict``
MODULES: dict[str, str] = {
    "fedgrpo": "fedgrpo.algorithms.fedgrpo",
    "zero-shot": "fedgrpo.algorithms.zero_shot",
    "central-grpo": "fedgrpo.algorithms.central_grpo",
    "fedpetuning": "fedgrpo.algorithms.fedpetuning.train",
    "dpsda-fl": "fedgrpo.algorithms.dpsda.train",
}
assert set(MODULES) == set(METHODS), "every configurable method has a module"

# baseline -> module exposing ``run_simulation_engine(cfg, resume=False) -> dict`` (flower-simulation);
# FedGRPO's own module picks its transport itself
FLOWER_MODULES: dict[str, str] = {
    "fedpetuning": "fedgrpo.algorithms.fedpetuning.flower",
    "dpsda-fl": "fedgrpo.algorithms.dpsda.flower",
}


def run_method(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg.method`` into ``cfg.output_dir``; returns its results (also in ``results.json``)."""
    if cfg.federation.transport == "flower-simulation" and cfg.method in FLOWER_MODULES:
        return importlib.import_module(FLOWER_MODULES[cfg.method]).run_simulation_engine(cfg, resume)
    return importlib.import_module(MODULES[cfg.method]).run(cfg, resume=resume)
