"""Where a GRPO step's time goes: TRL's own profiling timers, collected in-process.

Builds the same pipeline as ``fedgrpo run`` (preset plus overrides, real clients, in-process
transport), runs a few steps without evaluation and prints per-phase seconds (first step dropped):

    python bench/step_phases.py --steps 4 default grpo.gradient_checkpointing=true

``--full-lm-head`` keeps TRL's own choice of projecting every position through the LM head on the
CPU (:func:`fedgrpo.accel.trl_patch.score_completions_only` off), all else as configured.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch
import trl.extras.profiling as profiling
from transformers import TrainerCallback

from fedgrpo.accel.trl_patch import score_completions_only
from fedgrpo.config import load_config
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.assemble import build_advantage, build_selector
from fedgrpo.run.metrics import peak_rss_mb
from fedgrpo.run.trl import make_trainer, train_dataset
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport

PHASES: dict[int, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
STEP = [0]


def _record(self: profiling.ProfilingContext, duration: float) -> None:
    PHASES[STEP[0]][self.name] += duration


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        PHASES[STEP[0]]["step_total"] = time.perf_counter() - self.start
        STEP[0] += 1
        self.start = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", default="default")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--full-lm-head", action="store_true", help="TRL's LM head on every position")
    args = parser.parse_args()
    cfg = load_config(args.config, [*args.overrides, f"grpo.max_steps={args.steps}"])
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split = build_data(cfg)
    transport = InProcessTransport(build_clients(cfg, split))
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    profiling.ProfilingContext._log_metrics = _record
    with tempfile.TemporaryDirectory() as tmp:
        # the same selector as a run (for the confidence graph: built by competence queries first)
        selector, _ = build_selector(
            cfg, split.auxiliary, transport, tokenizer, Path(tmp), False, split.client_domains
        )
        cfg.run.save_steps = args.steps + 1
        trainer = make_trainer(
            cfg,
            load_policy(cfg.model.name_or_path, cfg.model.dtype),
            tokenizer,
            train_dataset(split.train_questions, cfg.model.worked_example),
            build_advantage(cfg, transport, selector),
            Path(tmp) / "checkpoints",
        )
        if args.full_lm_head:
            score_completions_only(False)
        trainer.add_callback(StepClock())
        trainer.train()
    timed = [PHASES[i] for i in range(1, args.steps)] or [PHASES[0]]
    names = sorted({k for p in timed for k in p})
    mean = {k: round(sum(p.get(k, 0.0) for p in timed) / len(timed), 2) for k in names}
    print(
        json.dumps(
            {
                "overrides": " ".join(args.overrides),
                "full_lm_head": args.full_lm_head,
                "steps_timed": len(timed),
                "seconds": mean,
                "peak_rss_mb": round(peak_rss_mb()),
            }
        )
    )


if __name__ == "__main__":
    main()
