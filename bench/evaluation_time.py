"""Held-out evaluation time of the embedded policy, with and without reading shared prompts once.

Evaluates the untrained SmolLM2 (as a run's "before" evaluation does: greedy, the preset's batch
size and token limit) on the default preset's held-out sets twice in one process, with
``run.share_prompts`` off and on, and checks that the answers are the same:

    python bench/evaluation_time.py --per-domain 100
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgrpo.config import load_config
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.evaluate import evaluate_questions
from fedgrpo.simulation.data import build_data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", default="default")
    parser.add_argument("--per-domain", type=int, default=100)
    args = parser.parse_args()
    cfg = load_config(args.config, [])
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    heldout = build_data(cfg).heldout
    tokenizer, model = load_tokenizer(cfg.model.name_or_path), load_policy(cfg.model.name_or_path)
    results, seconds = {}, {}
    for shared in (False, True):
        start = time.perf_counter()
        results[shared], _ = evaluate_questions(
            model,
            tokenizer,
            heldout,
            cfg.eval.max_new_tokens,
            cfg.eval.batch_size,
            cfg.model.worked_example,
            args.per_domain,
            share_prompts=shared,
        )
        seconds[shared] = time.perf_counter() - start
    n = sum(r.n for r in results[True].values())
    same = all(results[True][d].correct == results[False][d].correct for d in results[True])
    print(f"{n} held-out questions, greedy, batch {cfg.eval.batch_size}, {cfg.eval.max_new_tokens} tokens")
    print(f"read whole: {seconds[False]:.1f} s; shared prompts read once: {seconds[True]:.1f} s; ", end="")
    print(f"{seconds[False] / seconds[True]:.2f}x; same strict correct counts per domain: {same}")
    for d, r in results[True].items():
        print(
            f"  {d}: strict {r.correct}/{r.n} (whole: {results[False][d].correct}), answer {r.answer_correct}"
        )


if __name__ == "__main__":
    main()
