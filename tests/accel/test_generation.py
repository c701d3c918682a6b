"""The generation shortcut (:mod:`fedgrpo.accel.generation`): same tokens as transformers' own generate."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GenerationConfig

from fedgrpo.accel.few_rows import FEW_ROWS, few_row_linears
from fedgrpo.accel.generation import (
    fast_generate,
    is_merged,
    merged_adapter,
    speed_up_generation,
)
from fedgrpo.accel.prompt_cache import PromptCache
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import load_policy, load_tokenizer


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
    import fedgrpo.accel.generation as generation

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


@pytest.mark.parametrize(
    "shape", [(3, 24), (2, 1, 24), (1, 24), (FEW_ROWS, 24), (FEW_ROWS + 1, 24), (4, 5, 24)]
)
def test_few_row_linears_give_linear_numbers_and_only_take_few_rows(shape, monkeypatch) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(*shape)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    calls = []
    real_mm = torch.mm
    with few_row_linears(layer):
        assert "forward" in vars(layer)
        monkeypatch.setattr(torch, "mm", lambda *a: calls.append(1) or real_mm(*a))  # which path ran
        got = layer(x)
        monkeypatch.undo()
    assert "forward" not in vars(layer)  # the class's own forward again
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    rows = x.numel() // 24
    assert calls == ([1] if rows <= FEW_ROWS else [])


def test_few_row_linears_are_restored_after_a_failure_and_skip_patched_layers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    own = model[2].forward = lambda x: x[..., :2]  # a layer someone else already patched
    with pytest.raises(RuntimeError, match="boom"), few_row_linears(model):
        assert "forward" in vars(model[0])
        assert model[2].forward is own
        raise RuntimeError("boom")
    assert "forward" not in vars(model[0])
    assert model[2].forward is own


def test_few_row_linears_leave_a_weight_in_a_tensor_subclass_to_its_own_kernels() -> None:
    """A quantisation library's weight (torchao wraps it in its own tensor subclass) is not multiplied
    as a plain tensor: the layer keeps its own forward."""

    class Wrapped(torch.Tensor):  # stands for torchao's Int8Tensor and the like
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[1].weight = torch.nn.Parameter(model[1].weight.detach().as_subclass(Wrapped))
    with few_row_linears(model):
        assert "forward" in vars(model[0]) and "forward" not in vars(model[1])


def test_generation_runs_its_decode_steps_through_few_row_linears(lora_model) -> None:
    model, tok = lora_model
    batch = _batch(tok, ["What is 2 + 2?"] * 3)
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    seen: list[bool] = []
    head = model.get_output_embeddings()  # a plain linear layer
    lora = next(m for m in model.modules() if hasattr(m, "lora_A"))  # a LoRA one
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append("forward" in vars(m))) for m in (head, lora)
    ]
    try:
        with torch.no_grad():
            fast_generate(model.generate, model, **batch, generation_config=config)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and all(seen)
    assert "forward" not in vars(head) and "forward" not in vars(lora)


def test_repeated_prompts_after_a_common_start_read_it_once_and_each_prompt_once(
    lora_model, monkeypatch, prefill_reads
):
    import fedgrpo.accel.generation as generation

    model, tok = lora_model
    # a competence chunk: each question's prompt 3 times (its samples), all after the same worked example
    questions = ["What is 3 + 4?", "What is 12 * 11 today?", "Is 7 prime?"]
    batch = _batch(tok, [q for q in questions for _ in range(3)])
    width = batch["input_ids"].shape[1]
    plans = []
    real = generation._generate_after_common_prefix
    monkeypatch.setattr(
        generation,
        "_generate_after_common_prefix",
        lambda *a: plans.append(a[4] if len(a) > 4 else None) or real(*a),
    )
    read = prefill_reads
    greedy = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    sampled = GenerationConfig(max_new_tokens=10, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)
    for config in (greedy, sampled):
        with torch.no_grad():
            torch.manual_seed(3)
            plain = model.generate(**batch, generation_config=config)
            torch.manual_seed(3)
            fast = fast_generate(model.generate, model, **batch, generation_config=config)
        assert torch.equal(plain[:, width:], fast[:, width:])
    assert len(plans) == 2 and all(p is not None and p.first.shape[0] == 3 for p in plans)
    # per call: the common start once, then the three prompts' rests, never nine rows whole
    common, length = read[0], plans[0].length
    assert 16 <= common < length < width
    assert read == [common, 3 * (length - common)] * 2


def test_few_row_lora_layers_give_peft_numbers_without_merging(lora_model, monkeypatch) -> None:
    """At few rows the adapter's products are computed in the decode steps; above, it is merged."""
    model, tok = lora_model
    ids = torch.randint(0, 100, (FEW_ROWS + 1, 5))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with few_row_linears(model):
            lora = [m for m in model.modules() if hasattr(m, "lora_A") and "forward" in vars(m)]
            few = model(input_ids=ids[:3, :1]).logits  # three rows: the fused forward
            many = model(input_ids=ids).logits  # 45 rows: PEFT's own
        assert not [m for m in model.modules() if "forward" in vars(m)]
    assert lora  # every LoRA layer got the few-row forward
    assert torch.allclose(few, model(input_ids=ids[:3, :1]).logits, atol=1e-5)
    assert torch.allclose(many, expected, atol=1e-6)
    merges = []
    merge = model.merge_adapter
    monkeypatch.setattr(model, "merge_adapter", lambda *a, **k: merges.append(1) or merge(*a, **k))
    config = GenerationConfig(max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    for rows in (FEW_ROWS, FEW_ROWS + 1):
        batch = _batch(tok, ["What is 2 + 2?"] * rows)
        with torch.no_grad():
            plain = model.generate(**batch, generation_config=config)
            fast = fast_generate(model.generate, model, **batch, generation_config=config)
        assert torch.equal(plain[:, batch["input_ids"].shape[1] :], fast[:, batch["input_ids"].shape[1] :])
    assert merges == [1]  # only the call of more than FEW_ROWS rows merged
    assert not is_merged(model)


def test_prompt_starts_are_read_once_across_calls(lora_model, prefill_reads) -> None:
    """A caller's kept prompt starts: each call reads only what it does not share with one of them."""
    model, tok = lora_model
    first, second = _batch(tok, ["What is 3 + 4?"] * 3), _batch(tok, ["What is 12 * 11 today?"] * 3)
    a, b = first["input_ids"][0].tolist(), second["input_ids"][0].tolist()
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)  # "... What is"
    prompts = PromptCache(entries=2)
    assert shared >= 16 and prompts.matched(first["input_ids"][0]) == 0
    read = prefill_reads
    config = GenerationConfig(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    for batch in (first, second, first):
        width = batch["input_ids"].shape[1]
        with torch.no_grad():
            plain = model.generate(**batch, generation_config=config)
            fast = fast_generate(model.generate, model, prompts=prompts, **batch, generation_config=config)
        assert torch.equal(plain[:, width:], fast[:, width:])
    # rows are alike: the common start is the prompt but its last token, which generate reads
    starts = [len(a) - 1, len(b) - 1]
    assert read == [starts[0], starts[1] - shared]  # the third call reads nothing: its start is kept
    assert prompts.matched(first["input_ids"][0]) == starts[0]
    prompts.forget()
    with torch.no_grad():
        fast_generate(model.generate, model, prompts=prompts, **first, generation_config=config)
    assert read[-1] == starts[0]  # forgotten: read again
    for question in ("Is 7 prime?", "Is 9 prime?", "Name a prime."):  # two kept at most
        batch = _batch(tok, [question] * 3)
        fast_generate(model.generate, model, prompts=prompts, **batch, generation_config=config)
    assert len(prompts._caches) == 2


def test_the_rows_a_call_decodes_count_its_returned_sequences_and_beams() -> None:
    from fedgrpo.accel.generation import _decoded_rows

    ids = torch.zeros((2, 5), dtype=torch.long)
    assert _decoded_rows({"input_ids": ids}) == 2
    sampled = GenerationConfig(do_sample=True, num_return_sequences=4)
    assert _decoded_rows({"input_ids": ids, "generation_config": sampled}) == 8
    assert _decoded_rows({"input_ids": ids, "num_beams": 3, "num_return_sequences": 3}) == 18
    assert _decoded_rows({"inputs_embeds": torch.zeros(2, 5, 4)}) == float("inf")  # cannot tell: merge
