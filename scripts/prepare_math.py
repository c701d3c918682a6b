"""Write MATH's seven subjects as JSONL files (fields problem, answer) for configs/paper/*-math.yaml.

    python scripts/prepare_math.py data/math        # needs the hub once (EleutherAI/hendrycks_math)

The answer is the last ``\\boxed{...}`` of each solution (braces matched; math-verify has no extractor
for a gold solution's box); a solution without one is skipped and counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUBJECTS = [
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
]


def last_boxed(solution: str) -> str | None:
    """The content of the last ``\\boxed{...}``, nested braces included; None if there is none."""
    start = solution.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[j], 0)
        if depth == 0:
            return solution[i + 1 : j].strip() or None
    return None


def main(folder: str) -> None:
    from datasets import load_dataset

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        rows, skipped = [], 0
        for row in load_dataset("EleutherAI/hendrycks_math", subject, split="train"):
            answer = last_boxed(row["solution"])
            if answer is None:
                skipped += 1
                continue
            rows.append(json.dumps({"problem": row["problem"], "answer": answer}) + "\n")
        (out / f"{subject}.jsonl").write_text("".join(rows))
        print(f"{subject}: {len(rows)} problems ({skipped} without a boxed answer skipped)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/math")
