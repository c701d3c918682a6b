"""A client model's scoring call (one question, ``clients.samples`` answers) under four paths, two
default experts, alternating: plain generate, the prompt levers without few-row matmuls, with them,
and with them but the LoRA adapter left unmerged. Prints seconds per call (median):

    python bench/scoring_merge.py
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from client_scoring import _evaluators  # noqa: E402

from fedgrpo import generation  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.run.assemble import build_data  # noqa: E402


def main() -> None:
    cfg = load_config("default", [])
    split = build_data(cfg)
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    evaluators = _evaluators(cfg, split)[:2]
    questions = [q.question for q in split.train_questions[:8]]
    merge, rows = generation.merged_adapter, generation.FEW_ROWS
    times: dict[str, list[float]] = {}
    for _ in range(2):
        for name in ("plain", "levers", "few rows", "few rows, unmerged"):
            generation.FEW_ROWS = 0 if name in ("plain", "levers") else rows
            unmerged = name == "few rows, unmerged"
            generation.merged_adapter = (lambda m: contextlib.nullcontext()) if unmerged else merge
            for ev in evaluators:
                ev.cache_size, ev.share_prompts = 0, name != "plain"
                start = time.perf_counter()
                for q in questions:
                    ev._sample([q])
                times.setdefault(name, []).append((time.perf_counter() - start) / len(questions))
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.3f} s per call", [round(v, 3) for v in values])


if __name__ == "__main__":
    main()
