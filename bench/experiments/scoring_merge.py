"""A client model's scoring call (one question, ``clients.samples`` answers) under four paths, two
default experts, alternating: plain generate, the prompt levers without few-row matmuls, with them
and the LoRA adapter merged for the call, and with them and the adapter's products computed in the
few-row forward (unmerged: what a call of few rows does). Replies are full (``direct_answer`` off)
and the prompt is read whole each call (no kept prompt starts), as when this was first measured.
Prints seconds per call (median):

    python bench/experiments/scoring_merge.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # bench/, for the maintained benches it reuses
from client_scoring import _evaluators  # noqa: E402

from fedgrpo.accel import few_rows, generation  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.simulation.data import build_data  # noqa: E402


def main() -> None:
    cfg = load_config("default", [])
    split = build_data(cfg)
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    evaluators = _evaluators(cfg, split)[:2]
    questions = [q.question for q in split.train_questions[:8]]
    rows, decoded = few_rows.FEW_ROWS, generation._decoded_rows
    times: dict[str, list[float]] = {}
    for _ in range(2):
        for name in ("plain", "levers", "few rows, merged", "few rows, adapter in the forward"):
            few_rows.FEW_ROWS = 0 if name in ("plain", "levers") else rows
            merged = name != "few rows, adapter in the forward"
            generation._decoded_rows = (lambda kwargs: float("inf")) if merged else decoded
            for ev in evaluators:
                ev.cache_size, ev.share_prompts, ev.direct_answer = 0, name != "plain", False
                ev._prompts = None  # type: ignore[assignment]
                start = time.perf_counter()
                for q in questions:
                    ev._sample([q])
                times.setdefault(name, []).append((time.perf_counter() - start) / len(questions))
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.3f} s per call", [round(v, 3) for v in values])


if __name__ == "__main__":
    main()
