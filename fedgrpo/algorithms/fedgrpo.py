"""FedGRPO itself as a method: in process, or on a Flower engine as ``federation.transport`` says."""

from __future__ import annotations

from typing import Any

from fedgrpo.config import FedGRPOConfig


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    if cfg.federation.transport == "in_process":
        from fedgrpo.run.experiment import run_in_process

        return run_in_process(cfg, resume=resume)
    from fedgrpo.flower.launch import run_on_flower

    return run_on_flower(cfg, resume=resume)
