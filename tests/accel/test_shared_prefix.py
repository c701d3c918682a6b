"""The shared-prefix loss forward (:mod:`fedgrpo.accel.shared_prefix`): TRL's numbers, fewer tokens read."""

from __future__ import annotations

import inspect

import torch
from peft import LoraConfig, get_peft_model
from trl.trainer.utils import add_fused_lm_head

from fedgrpo.accel import shared_prefix, speed_up_trainer_model
from fedgrpo.accel.compat import cache_argument
from fedgrpo.accel.shared_prefix import plan_shared_prefix, share_prompt_prefixes
from fedgrpo.accel.trl_patch import score_completions_only
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import load_policy, load_tokenizer


def _rows(tok, groups: list[tuple[str, list[str]]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """TRL's layout: left-padded prompts, then right-padded completions; returns ids, mask, logits_to_keep."""
    prompts, completions = [], []
    for question, answers in groups:
        text = tok.apply_chat_template(build_messages(question), tokenize=False, add_generation_prompt=True)
        for answer in answers:
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
            completions.append(tok(answer, add_special_tokens=False)["input_ids"])
    p, c = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id
    ids = [
        [pad] * (p - len(a)) + a + b + [pad] * (c - len(b)) for a, b in zip(prompts, completions, strict=True)
    ]
    mask = [
        [0] * (p - len(a)) + [1] * (len(a) + len(b)) + [0] * (c - len(b))
        for a, b in zip(prompts, completions, strict=True)
    ]
    return torch.tensor(ids), torch.tensor(mask), c


GROUPS = [
    ("What is 3 + 4?", ["3 + 4 = 7. <answer>7</answer>", "<answer>8</answer>", "It is 7", "7"]),
    ("What is 12 * 11 in total?", ["<answer>132</answer>", "12 * 11 = 121", "<answer>132</answer>", "no"]),
]


def _model(shared: bool):
    torch.manual_seed(0)
    base = load_policy("tiny-random")
    add_fused_lm_head(base, outputs=("log_probs", "entropy"))  # as TRL's GRPOTrainer does
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    model = get_peft_model(base, config)
    model.train()
    return share_prompt_prefixes(model) if shared else model


def _loss_and_grads(model, ids, mask, keep):
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    logps = out.log_probs[:, -keep:]
    (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach(), out.entropy[:, -keep:].detach(), grads


def test_log_probs_and_gradients_match_the_plain_forward(monkeypatch) -> None:
    tok = load_tokenizer("tiny-random")
    ids, mask, keep = _rows(tok, GROUPS)
    plain = _loss_and_grads(_model(shared=False), ids, mask, keep)
    calls = []
    real = shared_prefix._shared_forward
    monkeypatch.setattr(shared_prefix, "_shared_forward", lambda *a: calls.append(1) or real(*a))
    shared = _loss_and_grads(_model(shared=True), ids, mask, keep)
    assert calls == [1]  # TRL's fused forward took the shared path
    assert torch.allclose(plain[0], shared[0], atol=1e-5)
    assert torch.allclose(plain[1], shared[1], atol=1e-5)
    assert plain[2].keys() == shared[2].keys() and plain[2]
    for name, grad in plain[2].items():
        assert torch.allclose(grad, shared[2][name], atol=1e-5, rtol=1e-4), name


def test_the_plan_reads_each_prompt_once() -> None:
    tok = load_tokenizer("tiny-random")
    ids, mask, _ = _rows(tok, GROUPS)
    plan = plan_shared_prefix(ids, mask)
    assert plan is not None
    assert plan.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # the shared length covers the prompts (the two rows that also share a completion do not lengthen it)
    prompt = len(
        tok(
            tok.apply_chat_template(build_messages(GROUPS[1][0]), tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
    )
    assert plan.length >= prompt - 1
    assert plan.tokens < 0.6 * ids.numel()


def test_rows_without_a_shared_prefix_are_read_whole() -> None:
    ids = torch.arange(40).view(4, 10)
    assert plan_shared_prefix(ids, torch.ones_like(ids)) is None


def test_generation_is_untouched() -> None:
    tok = load_tokenizer("tiny-random")
    ids, mask, _ = _rows(tok, GROUPS)
    with torch.no_grad():
        expected = _model(shared=False).generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False
        )
        got = _model(shared=True).generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False
        )
    assert torch.equal(expected, got)


def test_checkpointed_layers_are_read_whole(monkeypatch) -> None:
    tok = load_tokenizer("tiny-random")
    ids, mask, keep = _rows(tok, GROUPS)
    calls = []
    monkeypatch.setattr(shared_prefix, "_shared_forward", lambda *a: calls.append(1))
    model = _model(shared=True)
    model.gradient_checkpointing_enable()
    logps = _loss_and_grads(model, ids, mask, keep)[0]
    assert calls == [] and torch.isfinite(logps).all()


def test_an_expert_sft_step_is_the_same_with_the_shared_prefix(monkeypatch, tmp_path) -> None:
    from fedgrpo.client import experts
    from fedgrpo.data import Example

    pairs = [(a, b) for a in range(4) for b in range(2)]
    examples = [Example(f"q{a}{b}", "sums", f"What is {a} + {b}?", str(a + b)) for a, b in pairs]
    recipe = experts.ExpertRecipe(base_model="tiny-random", epochs=1, batch_size=4, worked_example=True)
    calls = []
    real = shared_prefix._shared_forward
    monkeypatch.setattr(shared_prefix, "_shared_forward", lambda *a: calls.append(1) or real(*a))

    def losses(share) -> list[float]:  # noqa: ANN001
        monkeypatch.setattr(experts, "speed_up_trainer_model", share)
        torch.manual_seed(0)
        trainer = experts.local_trainer(
            recipe,
            load_policy("tiny-random"),
            load_tokenizer("tiny-random"),
            examples,
            tmp_path / str(len(calls)),
            peft_config=experts.lora_config(recipe),
        )
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    shared = losses(speed_up_trainer_model)
    assert calls, "the SFT forward never took the shared path"
    taken = len(calls)
    plain = losses(lambda model, generation=True: model)
    assert len(calls) == taken  # the plain run read its rows whole
    assert len(shared) == 2 and torch.allclose(torch.tensor(shared), torch.tensor(plain), atol=1e-4)


def test_the_compact_lm_head_gives_trl_numbers_from_the_completions_only(monkeypatch) -> None:
    """TRL projects every position on the CPU; compacted, it projects only the labelled ones, same numbers."""
    from trl.kernels import ChunkedLogProbFunction  # the projection TRL's fused head runs

    tok = load_tokenizer("tiny-random")
    ids, mask, keep = _rows(tok, GROUPS)
    projected: list[int] = []
    real = ChunkedLogProbFunction.apply
    monkeypatch.setattr(
        ChunkedLogProbFunction, "apply", lambda h, *a: projected.append(h.shape[0]) or real(h, *a)
    )
    try:
        score_completions_only(False)
        full = _loss_and_grads(_model(shared=True), ids, mask, keep)
        score_completions_only(True)
        score_completions_only(True)  # idempotent: wraps TRL's own function once
        compact = _loss_and_grads(_model(shared=True), ids, mask, keep)
        score_completions_only(False)  # TRL's own choice again, after two installs
        _loss_and_grads(_model(shared=True), ids, mask, keep)
    finally:
        score_completions_only(False)
    labelled = int((ids.masked_fill(mask == 0, -100)[:, -keep:] != -100).sum())
    every = ids.shape[0] * (ids.shape[1] - 1)
    assert projected == [every, labelled, every]
    assert labelled < every / 2
    assert torch.allclose(full[0], compact[0], atol=1e-5)
    assert torch.allclose(full[1], compact[1], atol=1e-5)
    assert full[2].keys() == compact[2].keys() and full[2]
    for name, grad in full[2].items():
        assert torch.allclose(grad, compact[2][name], atol=1e-5, rtol=1e-4), name


def test_the_cache_goes_under_the_name_the_forward_takes() -> None:
    """transformers renamed a forward's ``past_key_values`` to ``cache`` (5.24 warns, 5.40 drops it)."""

    def renamed(input_ids=None, cache=None, **kwargs): ...  # noqa: ANN001, ANN003, ANN202
    def older(input_ids=None, past_key_values=None, **kwargs): ...  # noqa: ANN001, ANN003, ANN202

    assert cache_argument(renamed) == "cache"
    assert cache_argument(older) == "past_key_values"
    from transformers import LlamaModel

    names = inspect.signature(LlamaModel.forward).parameters
    assert cache_argument(LlamaModel.forward) in names
