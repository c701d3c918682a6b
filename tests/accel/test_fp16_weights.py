"""Client models with their linear weights held in fp16 (:mod:`fedgrpo.accel.fp16_weights`): the numbers of
fp16-rounded weights, every adapter kept on the shared base, and generation that never merges."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GenerationConfig

from fedgrpo.accel.few_rows import FEW_ROWS, few_row_linears
from fedgrpo.accel.fp16_weights import Fp16Linear, is_packed, pack_fp16_weights
from fedgrpo.accel.generation import fast_generate, is_merged
from fedgrpo.client import ModelEvaluator
from fedgrpo.client.factory import in_process_model
from fedgrpo.config import ConfigError, load_config
from fedgrpo.method.prompting import build_messages
from fedgrpo.models.loading import load_policy, load_tokenizer


def _outside_lora(model) -> list[torch.nn.Module]:
    inner = {
        id(x)
        for m in model.modules()
        if hasattr(m, "lora_A")
        for name in ("lora_A", "lora_B")
        for x in getattr(m, name).modules()
    }
    return [m for m in model.modules() if type(m) is torch.nn.Linear and id(m) not in inner]


@pytest.fixture
def pair():
    """A PEFT model with two non-zero adapters, and a copy whose base weights are rounded to fp16 in
    place (fp32 arithmetic on the values packing keeps), the LM head untied from the embeddings as
    packing leaves it."""
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    model = get_peft_model(load_policy("tiny-random"), config, adapter_name="first")
    model.add_adapter("second", config)
    model.eval()
    rounded = copy.deepcopy(model)
    head = rounded.get_base_model().lm_head
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    with torch.no_grad():
        for layer in _outside_lora(rounded):
            layer.weight.copy_(layer.weight.half().float())
    return model, rounded


def _prompts(n: int) -> dict[str, torch.Tensor]:
    tok = load_tokenizer("tiny-random")
    tok.padding_side = "left"
    questions = [f"What is {i} + {i + 3}?" for i in range(n)]
    texts = [
        tok.apply_chat_template(build_messages(q), tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_packing_keeps_each_adapter_and_computes_with_fp16_rounded_weights(pair) -> None:
    model, rounded = pair
    linears = len(_outside_lora(model))
    assert pack_fp16_weights(model) == linears > 0
    assert is_packed(model) and not _outside_lora(model)
    assert isinstance(model.get_base_model().lm_head, Fp16Linear)
    assert all(type(m.lora_A["first"]) is torch.nn.Linear for m in model.modules() if hasattr(m, "lora_A"))
    assert pack_fp16_weights(model) == 0  # once
    ids = torch.randint(0, 100, (FEW_ROWS + 4, 6))
    outputs = {}
    with torch.no_grad():
        for adapter in ("first", "second"):
            model.set_adapter(adapter)
            rounded.set_adapter(adapter)
            expected = rounded(input_ids=ids).logits
            many = model(input_ids=ids).logits  # PEFT's own forward over the packed base
            with few_row_linears(model):
                fused = [m for m in model.modules() if hasattr(m, "lora_A") and "forward" in vars(m)]
                few = model(input_ids=ids[:3]).logits  # the few-row forward adds the adapter itself
            assert len(fused) == linears - 1  # every LoRA layer on a packed base (all but the head)
            assert torch.allclose(many, expected, atol=1e-5)
            assert torch.allclose(few, expected[:3], atol=1e-5)
            outputs[adapter] = many
    assert not torch.allclose(outputs["first"], outputs["second"], atol=1e-3)  # each client's adapter applies


def test_generation_on_a_packed_base_never_merges(pair, monkeypatch) -> None:
    model, rounded = pair
    pack_fp16_weights(model)
    merges = []
    monkeypatch.setattr(model, "merge_adapter", lambda *a, **k: merges.append(1))
    tok = load_tokenizer("tiny-random")
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    batch = _prompts(FEW_ROWS + 2)  # more rows than FEW_ROWS: an unpacked base would be merged
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        fast = fast_generate(model.generate, model, **batch, generation_config=config)
        expected = rounded.generate(**batch, generation_config=config)
    assert merges == [] and not is_merged(model)
    assert torch.equal(fast[:, width:], expected[:, width:])


def test_without_fbgemm_the_model_stays_as_loaded(monkeypatch, caplog) -> None:
    """A torch build that cannot pack (ARM builds have no fbgemm) keeps the model in fp32, and says so."""

    def no_fbgemm(*args, **kwargs):
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack_fp16 NoQEngine")

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack_fp16", no_fbgemm)
    model = load_policy("tiny-random")
    with caplog.at_level(logging.WARNING, logger="fedgrpo.accel.fp16_weights"):
        assert pack_fp16_weights(model) == 0
    assert "kept in fp32" in caplog.text
    assert not is_packed(model) and _outside_lora(model)


def test_clients_weights_fp16_packs_the_client_model_it_scores_with() -> None:
    cfg = load_config("graph-smoke", ["clients.weights=fp16", "clients.samples=2"])
    net, tok = load_policy("tiny-random"), load_tokenizer("tiny-random")
    evaluator = in_process_model(cfg, net, tok, None)
    assert isinstance(evaluator, ModelEvaluator) and evaluator.model is net and is_packed(net)
    plain = load_policy("tiny-random")
    in_process_model(load_config("graph-smoke", []), plain, tok, None)
    assert not is_packed(plain)  # fp32 is the default
    evaluation = evaluator.evaluate("What is 2 + 2?", ["<answer>4</answer>", "<answer>5</answer>"])
    assert len(evaluation.rewards) == 2
    assert load_config("default", []).clients.weights == "fp16"
    # a deployed organisation's ClientApp lives for one message: packing would not pay back there
    from fedgrpo.flower.client_app import CLIENT_KEYS, client_view

    assert "weights" not in CLIENT_KEYS["clients"]
    assert "weights" not in client_view({"clients": {"weights": "fp16", "samples": 2}})["clients"]
    with pytest.raises(ConfigError, match="clients.weights"):
        load_config("graph-smoke", ["clients.weights=int8"])


@pytest.mark.parametrize("packed", [True, False])
def test_a_named_adapter_generates_without_switching_the_shared_base(pair, packed, monkeypatch) -> None:
    """Clients on one base take turns: each call names its adapter to the layers instead of PEFT's
    ``set_adapter`` (a walk over every module). Only merging, for many rows on an fp32 base, switches."""
    model, rounded = pair
    if packed:
        pack_fp16_weights(model)
    else:
        model = rounded
    tok = load_tokenizer("tiny-random")
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    switches: list[str] = []
    switch = model.set_adapter
    for rows in (3, FEW_ROWS + 2):
        batch = _prompts(rows)
        width = batch["input_ids"].shape[1]
        with torch.no_grad():
            rounded.set_adapter("second")
            expected = rounded.generate(**batch, generation_config=config)[:, width:]
            model.set_adapter("first")
            monkeypatch.setattr(model, "set_adapter", lambda name: switches.append(name) or switch(name))
            got = fast_generate(model.generate, model, **batch, generation_config=config, adapter="second")
            monkeypatch.undo()
        assert torch.equal(got[:, width:], expected)
    assert switches == ([] if packed else ["second"])  # the fp32 base merged the second call's adapter
