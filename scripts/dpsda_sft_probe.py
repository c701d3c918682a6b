"""What dpsda-fl's SFT step does to the policy: greedy answers to a few held-out questions before and
after ``dpsda.sft_steps`` of SFT on a recorded run's synthetic set (docs/baselines.md, "GRPO only").

    python scripts/dpsda_sft_probe.py docs/results/evidence/runs/dpsda-fl__seed=0 [SFT_STEPS] [PER_DOMAIN]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fedgrpo.algorithms.dpsda import train as dpsda
from fedgrpo.config import load_config
from fedgrpo.data import score_answer
from fedgrpo.method.answers import final_answer
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.run.evaluate import generate_completions
from fedgrpo.simulation.data import build_data


def main(record: Path, sft_steps: int = 10, per_domain: int = 8) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            str(record / "config.yaml"), [f"run.output_dir={tmp}/run", f"dpsda.sft_steps={sft_steps}"]
        )
        examples = dpsda.training_examples(dpsda.read_synthetic(record / "synthetic.jsonl"))
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = load_policy(cfg.model.name_or_path, cfg.model.dtype)
        questions = [q for domain in cfg.data.domains for q in build_data(cfg).heldout[domain][:per_domain]]

        def show(tag: str) -> None:
            texts = [q.question for q in questions]
            outs = generate_completions(model, tokenizer, texts, cfg.eval.max_new_tokens, 16, desc=tag)
            right = sum(score_answer(q, final_answer(o)) for q, o in zip(questions, outs, strict=True))
            print(f"{tag}: {right:.0f} of {len(questions)} right")
            for q, o in list(zip(questions, outs, strict=True))[:3]:
                print(f"  {q.question[-24:]!r} (answer {q.answer}): {o[:60]!r}")

        show("before SFT")
        model, steps = dpsda.train_sft(cfg, model, tokenizer, examples, Path(tmp) / "sft")
        show(f"after {steps} SFT steps on {len(examples)} synthetic samples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:]))
