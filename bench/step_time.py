"""Seconds per GRPO step and peak memory of the real FedGRPO pipeline under named settings.

Each variant is a real ``fedgrpo run`` of the default preset (SmolLM2, K=5 clients, in-process
transport) with evaluation off, in its own process; the first step is dropped as warm-up.

    python bench/step_time.py --steps 4 baseline fast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# "plain": TRL's stock settings (gradient checkpointing, T=1.0, 64 tokens, every prompt read whole);
# "unshared": the preset without reading shared prompts once; "default": the preset.
VARIANTS: dict[str, list[str]] = {
    "plain": [
        "grpo.gradient_checkpointing=true",
        "grpo.temperature=1.0",
        "grpo.max_completion_length=64",
        "run.threads=null",
        "run.share_prompts=false",
    ],
    "unshared": ["run.share_prompts=false"],
    "no_ckpt": ["grpo.temperature=1.0", "grpo.max_completion_length=64", "run.threads=null"],
    "default": [],
}


def run_variant(name: str, overrides: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        cmd = [
            sys.executable,
            "-m",
            "fedgrpo.cli",
            "run",
            "default",
            f"run.output_dir={out}",
            f"grpo.max_steps={steps}",
            "eval.before=false",
            "eval.after=false",
            f"run.save_steps={steps}",
            *overrides,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            return {"variant": name, "error": proc.stderr[-2000:]}
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
        timed = rows[1:] or rows
        return {
            "variant": name,
            "overrides": " ".join(overrides),
            "steps": len(rows),
            "seconds_per_step": round(sum(r["seconds"] for r in timed) / len(timed), 1),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "completion_mean_length": round(
                sum(r["trl/completions/mean_length"] for r in rows) / len(rows), 1
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    for name in args.variants:
        print(json.dumps(run_variant(name, VARIANTS[name], args.steps)), flush=True)


if __name__ == "__main__":
    main()
