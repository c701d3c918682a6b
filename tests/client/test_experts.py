"""Each client's expert: LoRA SFT on its own data, cached per client, adapters on one shared base.

Real TRL SFT on tiny-random (seconds), real PEFT adapters, and the real ``fedgrpo`` command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgrpo.client import ModelEvaluator, ScoringSettings
from fedgrpo.client.experts import (
    ExpertRecipe,
    answer_reward,
    ensure_experts,
    expert_key,
    load_experts,
    read_meta,
)
from fedgrpo.data import Example, make_qid
from fedgrpo.models.loading import load_policy, load_tokenizer

QUESTION = "What is 3 + 4?"
# Overfits tiny-random's adapter to one answer in 50 optimiser steps (one batch per epoch).
RECIPE = ExpertRecipe("tiny-random", epochs=50, learning_rate=1e-2, batch_size=8)


def holding(answer: str, n: int = 8) -> list[Example]:
    """A client's private data: the same question n times with this client's answer."""
    return [Example(f"{make_qid('d', QUESTION)}{i}", "d", QUESTION, answer) for i in range(n)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    cache = tmp_path_factory.mktemp("experts")
    folders, failed = ensure_experts(RECIPE, {"seven": holding("7"), "twelve": holding("12")}, cache)
    assert failed == {}
    return folders, cache


def test_each_client_keeps_its_own_adapter_on_one_shared_base(trained) -> None:
    folders, _ = trained
    model = load_experts(load_policy("tiny-random"), folders)
    tokenizer = load_tokenizer("tiny-random")
    assert set(model.peft_config) == {"seven", "twelve"}  # two adapters, one base model object

    def evaluator(adapter: str) -> ModelEvaluator:
        return ModelEvaluator(
            model,
            tokenizer,
            ScoringSettings(samples=1, max_new_tokens=8, worked_example=False),
            adapter=adapter,
        )

    seven, twelve = evaluator("seven"), evaluator("twelve")
    # Taking turns on the shared base: each client always answers with what its own data taught it.
    assert [seven.answer(QUESTION), twelve.answer(QUESTION), seven.answer(QUESTION)] == ["7", "12", "7"]
    scored = twelve.evaluate(QUESTION, ["<answer>12</answer>", "<answer>7</answer>"])
    assert scored.method == "model" and scored.rewards == [1.0, 0.0]


def test_experts_are_cached_under_a_key_of_base_data_and_recipe(trained, caplog) -> None:
    folders, cache = trained
    before = {c: read_meta(f) for c, f in folders.items()}
    with caplog.at_level("INFO", logger="fedgrpo.client.experts"):
        again, failed = ensure_experts(RECIPE, {"seven": holding("7"), "twelve": holding("12")}, cache)
    assert again == folders and failed == {}
    assert "LoRA SFT" not in caplog.text and caplog.text.count("cached at") == 2
    assert {c: read_meta(f) for c, f in again.items()} == before
    assert before["seven"]["examples"] == 8 and before["seven"]["final_loss"] < before["seven"]["first_loss"]

    key = expert_key(RECIPE, holding("7"))
    assert folders["seven"].name == key
    assert expert_key(RECIPE, holding("8")) != key  # other data
    assert expert_key(ExpertRecipe("tiny-random", epochs=2), holding("7")) != key  # other recipe
    assert expert_key(ExpertRecipe("smollm2", epochs=50, learning_rate=1e-2), holding("7")) != key


def test_a_client_whose_training_fails_is_left_out_with_the_reason(tmp_path: Path) -> None:
    recipe = ExpertRecipe("tiny-random", epochs=1)
    folders, failed = ensure_experts(recipe, {"ok": holding("7", 2), "empty": []}, tmp_path)
    assert list(folders) == ["ok"]
    assert "holds no examples" in failed["empty"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-written adapter


def test_grpo_reward_is_the_clients_own_answer_check() -> None:
    reward = answer_reward(holding("7"))
    completions = ["<answer>7</answer>", [{"role": "assistant", "content": "<answer>8</answer>"}], "7"]
    assert reward(completions, question=[QUESTION] * 3) == [1.1, 0.1, 0.0]


def test_grpo_expert_trains_and_caches_an_adapter_that_loads_beside_sft_ones(trained, tmp_path: Path) -> None:
    # Plumbing on tiny-random (its rewards are all 0, so nothing to learn); learning itself is checked
    # on SmolLM2 in tests/models/test_smollm2.py.
    recipe = ExpertRecipe("tiny-random", method="grpo", epochs=2, batch_size=8, max_completion_length=8)
    folders, failed = ensure_experts(recipe, {"seven-grpo": holding("7")}, tmp_path)
    assert failed == {}
    meta = read_meta(folders["seven-grpo"])
    assert meta["method"] == "grpo" and meta["steps"] == 2 * 4  # 8 prompts x 4 samples / batch 8
    assert meta["first_reward"] == 0.0  # the reward function ran: no tagged answer, no reward
    sft = ExpertRecipe("tiny-random", epochs=2, batch_size=8, max_completion_length=8)
    assert expert_key(recipe, holding("7")) != expert_key(sft, holding("7"))
    assert expert_key(sft, holding("7")) == expert_key(ExpertRecipe("tiny-random", epochs=2), holding("7"))

    sft_folders, _ = trained
    model = load_experts(load_policy("tiny-random"), {**sft_folders, **folders})
    assert set(model.peft_config) == {"seven", "twelve", "seven-grpo"}


def test_training_several_experts_says_how_long_is_left(tmp_path: Path, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="fedgrpo.client.experts"):
        ensure_experts(RECIPE, {"seven": holding("7"), "twelve": holding("12")}, tmp_path)
    starts = [r.getMessage() for r in caplog.records if "private examples" in r.getMessage()]
    assert len(starts) == 2
    assert "left" not in starts[0] and "min left for the experts" in starts[1]
