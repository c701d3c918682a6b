"""The embedded SmolLM2: converted once from its GGUF, then loaded from the cache and used for real."""

from __future__ import annotations

import pytest

from fedgrpo.data import generate
from fedgrpo.evaluate import evaluate_policy
from fedgrpo.models import load_policy, load_tokenizer, smollm2_folder

pytestmark = pytest.mark.slow


def test_smollm2_converts_once_and_answers_in_tags() -> None:
    folder = smollm2_folder()
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert smollm2_folder() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # cached: not converted again
    tokenizer = load_tokenizer("smollm2")
    model = load_policy("smollm2")
    heldout = {"sums_1digit": generate("sums_1digit", 16, seed=11)}
    acc = evaluate_policy(model, tokenizer, heldout, max_new_tokens=32, batch_size=16)["sums_1digit"]
    assert acc.format_rate >= 0.75  # the worked example gets the answer into tags
    assert acc.correct >= 4  # a weak model, but not a random one


def test_a_smollm2_client_expert_learns_to_answer_in_tags(tmp_path) -> None:
    """LoRA SFT on 24 private examples: without any worked example, the expert answers in tags."""
    from fedgrpo.client import ModelEvaluator
    from fedgrpo.client.experts import ExpertRecipe, ensure_experts, load_experts

    private = generate("sums_2digit", 24, seed=3)
    folders, failed = ensure_experts(ExpertRecipe("smollm2"), {"client-0": private}, tmp_path)
    assert failed == {}
    tokenizer = load_tokenizer("smollm2")
    questions = [ex.question for ex in generate("sums_1digit", 8, seed=12)]

    def answered(model, adapter) -> int:
        ev = ModelEvaluator(
            model, tokenizer, samples=1, max_new_tokens=16, worked_example=False, adapter=adapter
        )
        return sum(ev.answer(q) is not None for q in questions)

    base = load_policy("smollm2")
    before = answered(base, None)
    after = answered(load_experts(base, folders), "client-0")
    assert after >= 7 and after > before  # zero-shot SmolLM2 rarely uses the tags
