"""The generation shortcut (:mod:`fedgrpo.generation`): same tokens as transformers' own generate."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GenerationConfig

from fedgrpo.generation import fast_generate, is_merged, merged_adapter, speed_up_generation
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.prompting import build_messages


@pytest.fixture(scope="module")
def lora_model():
    tok = load_tokenizer("tiny-random")
    tok.padding_side = "left"
    torch.manual_seed(0)
    # a non-zero adapter (PEFT initialises B to zero), so merging changes the weights
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    model = get_peft_model(load_policy("tiny-random"), config)
    model.eval()
    return model, tok


def _batch(tok, questions: list[str]):
    prompts = [
        tok.apply_chat_template(build_messages(q), tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_shared_prefill_gives_the_same_tokens_as_generate(lora_model) -> None:
    model, tok = lora_model
    # duplicates not adjacent, and prompts of different lengths (left padding)
    questions = ["What is 3 + 4?", "What is 12 * 11 today?", "What is 3 + 4?", "What is 12 * 11 today?"]
    questions += ["What is 3 + 4?", "What is 9 - 2?"]
    batch = _batch(tok, questions)
    assert (batch["attention_mask"] == 0).any()
    config = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    before = _weights(model)
    with torch.no_grad():
        plain = model.generate(**batch, generation_config=config)
        fast = fast_generate(model.generate, model, **batch, generation_config=config)
    width = batch["input_ids"].shape[1]
    assert torch.equal(plain[:, width:], fast[:, width:])
    # the adapter is separate again afterwards, the weights as they were up to rounding
    assert not is_merged(model)
    after = _weights(model)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_sampling_with_a_seed_matches_and_rows_keep_their_order(lora_model) -> None:
    model, tok = lora_model
    # a GRPO batch: G=8 copies of two prompts, so each distinct prompt is read once
    batch = _batch(tok, ["What is 5 + 5?"] * 8 + ["What is 6 + 1?"] * 8)
    config = GenerationConfig(
        max_new_tokens=10, do_sample=True, temperature=0.9, top_k=0, pad_token_id=tok.pad_token_id
    )
    with torch.no_grad():
        torch.manual_seed(7)
        plain = model.generate(**batch, generation_config=config)
        torch.manual_seed(7)
        fast = fast_generate(model.generate, model, **batch, generation_config=config)
    assert torch.equal(plain, fast)  # the prompts come back as they went in


def test_merging_is_undone_even_when_generation_fails(lora_model) -> None:
    model, _ = lora_model
    with pytest.raises(RuntimeError, match="boom"), merged_adapter(model):
        assert is_merged(model)
        raise RuntimeError("boom")
    assert not is_merged(model)


def test_speed_up_generation_wraps_once_and_keeps_results(lora_model) -> None:
    model, tok = lora_model
    batch = _batch(tok, ["What is 2 + 2?"] * 2)
    config = GenerationConfig(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        expected = model.generate(**batch, generation_config=config)
    original = model.generate
    try:
        speed_up_generation(model)
        wrapped = model.generate
        speed_up_generation(model)
        assert model.generate is wrapped
        with torch.no_grad():
            assert torch.equal(model.generate(**batch, generation_config=config), expected)
    finally:
        model.generate = original


def test_distinct_prompts_with_a_common_start_read_it_once(lora_model, monkeypatch) -> None:
    import fedgrpo.generation as generation

    model, tok = lora_model
    # an evaluation batch: every question differs, all after the same worked example, padded left
    batch = _batch(tok, ["What is 3 + 4?", "What is 12 * 11 today?", "What is 9 - 2?", "Is 7 prime?"])
    width = batch["input_ids"].shape[1]
    config = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    calls = []
    real = generation._generate_after_common_prefix
    monkeypatch.setattr(generation, "_generate_after_common_prefix", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        plain = model.generate(**batch, generation_config=config)
        fast = fast_generate(model.generate, model, **batch, generation_config=config)
    assert calls == [1]
    assert torch.equal(plain[:, width:], fast[:, width:])
