"""``zero-shot``: the untrained policy on the held-out set; no training, nothing communicated.

The floor every trained method is compared with. ``before`` and ``after`` are the same evaluation
(its question outcomes are saved once, as ``after``).
"""

from __future__ import annotations

from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import Example
from fedgrpo.run.evaluate import to_json
from fedgrpo.run.experiment import evaluate_heldout, load_server_model, write_results
from fedgrpo.run.metrics import peak_rss_mb
from fedgrpo.server.stats import RoundStats
from fedgrpo.simulation.data import build_data, split_summary
from fedgrpo.storage.run_folder import check_output_dir, in_run_folder, start_run


def run(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    check_output_dir(cfg, resume)
    split = build_data(cfg)
    return in_run_folder(cfg, resume, lambda: _run(cfg, resume, split_summary(split), split.heldout))


def _run(
    cfg: FedGRPOConfig, resume: bool, split_info: dict[str, Any], heldout: dict[str, list[Example]]
) -> dict[str, Any]:
    start_run(cfg, resume, split_info)
    tokenizer, model = load_server_model(cfg)
    accuracy = to_json(evaluate_heldout(cfg, model, tokenizer, heldout, "after"))
    results = {
        "name": cfg.name,
        "method": cfg.method,
        "steps": 0,
        "train_seconds": 0.0,
        "seconds_per_step": None,
        "peak_rss_mb": round(peak_rss_mb()),
        "before": accuracy,
        "after": accuracy,
        "communication": RoundStats().summary(),
        "split": split_info,
    }
    write_results(cfg, results)
    return results
