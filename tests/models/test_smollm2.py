"""The embedded SmolLM2: converted once from its GGUF, then loaded from the cache and used for real."""

from __future__ import annotations

import pytest

from fedgrpo.data import generate
from fedgrpo.models.loading import load_policy, load_tokenizer, smollm2_folder
from fedgrpo.run.evaluate import evaluate_questions

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
    acc = evaluate_questions(model, tokenizer, heldout, max_new_tokens=32, batch_size=16)[0]["sums_1digit"]
    assert acc.format_rate >= 0.75  # the worked example gets the answer into tags
    assert acc.correct >= 4  # a weak model, but not a random one


def test_a_smollm2_client_expert_learns_to_answer_in_tags(tmp_path) -> None:
    """LoRA SFT on 24 private examples: without any worked example, the expert answers in tags."""
    from fedgrpo.client import ModelEvaluator, ScoringSettings
    from fedgrpo.client.experts import ExpertRecipe, ensure_experts, load_experts

    private = generate("sums_2digit", 24, seed=3)
    folders, failed = ensure_experts(ExpertRecipe("smollm2"), {"client-0": private}, tmp_path)
    assert failed == {}
    tokenizer = load_tokenizer("smollm2")
    questions = [ex.question for ex in generate("sums_1digit", 8, seed=12)]

    def answered(model, adapter) -> int:
        ev = ModelEvaluator(
            model,
            tokenizer,
            ScoringSettings(samples=1, max_new_tokens=16, worked_example=False),
            adapter=adapter,
        )
        return sum(ev.answer(q) is not None for q in questions)

    base = load_policy("smollm2")
    before = answered(base, None)
    after = answered(load_experts(base, folders), "client-0")
    assert after >= 7 and after > before  # zero-shot SmolLM2 rarely uses the tags


def test_a_smollm2_client_expert_trained_by_grpo_on_its_own_answer_check(tmp_path) -> None:
    """GRPO on 8 private sums: the client's answer check gives varied rewards, so the adapter moves."""
    from safetensors.torch import load_file

    from fedgrpo.client.experts import ExpertRecipe, ensure_experts, read_meta

    private = generate("sums_1digit", 8, seed=3)
    recipe = ExpertRecipe(
        "smollm2", method="grpo", epochs=2, learning_rate=1e-4, worked_example=True, max_completion_length=24
    )
    folders, failed = ensure_experts(recipe, {"client-0": private}, tmp_path)
    assert failed == {}
    meta = read_meta(folders["client-0"])
    assert meta["method"] == "grpo" and meta["steps"] == 2 * 4
    assert meta["first_reward"] is not None and max(meta["first_reward"], meta["final_reward"]) > 0
    weights = load_file(folders["client-0"] / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # LoRA B starts at 0: it was trained
