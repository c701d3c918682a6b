"""The paper-scale configs load and validate here, offline and without a GPU, and say what the paper
says (G=8, M=2, lr 3e-6, vLLM generation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedgrpo.config import load_config
from scripts.prepare_math import last_boxed

PAPER = sorted((Path(__file__).parents[2] / "configs" / "paper").glob("*.yaml"))
# bf16 on a GPU is the configs' setting; a CPU-only machine can only check the rest of them
NO_GPU = [] if torch.cuda.is_available() else ["grpo.bf16=false", "run.device=cpu"]


def test_there_is_a_config_per_model_and_dataset() -> None:
    assert [p.stem for p in PAPER] == [
        "qwen2.5-3b-gsm8k",
        "qwen2.5-3b-math",
        "qwen2.5-math-1.5b-gsm8k",
        "qwen2.5-math-1.5b-math",
    ]


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_a_paper_config_validates_without_running(path: Path) -> None:
    cfg = load_config(path, NO_GPU)  # the hub is offline in tests: validation downloads nothing
    assert cfg.model.name_or_path in {"Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-3B"}
    assert (cfg.num_generations, cfg.federation.experts_per_question) == (8, 2)
    assert cfg.grpo["learning_rate"] == 3e-6 and cfg.grpo["use_vllm"] is True
    for method in ("zero-shot", "central-grpo"):
        assert load_config(path, [*NO_GPU, f"method={method}"]).method == method


def test_the_math_answer_is_the_last_box_with_nested_braces() -> None:
    assert last_boxed(r"so $x=\boxed{2}$, hence \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed("no box here") is None and last_boxed(r"\boxed{\frac{1}{2}") is None
