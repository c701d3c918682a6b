"""``method=fedpetuning`` on the configured transport: in process, or Flower's Simulation Engine.

A module of its own so that neither run imports the other (the Flower apps use the in-process run's
pieces).
"""

from __future__ import annotations

from typing import Any

from fedgrpo.config import FedGRPOConfig


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    if cfg.federation.transport == "flower-simulation":
        from fedgrpo.baselines.fedpetuning_flower import run_simulation_engine

        return run_simulation_engine(cfg, resume)
    from fedgrpo.baselines.fedpetuning import run as run_in_process

    return run_in_process(cfg, resume)
