"""DP-SGD experts (``clients.expert.dp``): real Opacus training of a LoRA adapter on tiny-random, its
privacy accounted, saved beside the adapter, in the cache key, and checked against dp-accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dp_accounting import (
    GaussianDpEvent,
    NeighboringRelation,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
    get_epsilon_gaussian,
)
from dp_accounting.pld import PLDAccountant
from pydantic import ValidationError

from fedgrpo.client.experts import ExpertRecipe, ensure_experts, expert_key, load_experts, read_meta
from fedgrpo.client.private_batches import padded_batch, per_example_loss, training_rows
from fedgrpo.client.private_training import (
    DPSettings,
    TrainingPrivacy,
    calibrate_noise,
    training_privacy,
)
from fedgrpo.config import load_config
from fedgrpo.data import Example, make_qid
from fedgrpo.models.loading import load_policy, load_tokenizer

QUESTION = "What is 3 + 4?"
DP = DPSettings(noise_multiplier=1.0)


def holding(answer: str, n: int = 8) -> list[Example]:
    return [Example(f"{make_qid('d', QUESTION)}{i}", "d", QUESTION, answer) for i in range(n)]


def private_recipe(dp: DPSettings = DP, **kw: object) -> ExpertRecipe:
    return ExpertRecipe("tiny-random", **{"epochs": 2, "batch_size": 4, "learning_rate": 1e-2, **kw}, dp=dp)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experts")


def test_dp_sgd_trains_an_expert_and_saves_what_it_cost(cache: Path, caplog) -> None:
    folders, failed = ensure_experts(private_recipe(), {"seven": holding("7")}, cache)
    assert failed == {}
    folder = folders["seven"]
    # 8 examples, batch 4: each sampled with probability 1/2, 2 steps an epoch, 2 epochs
    expected = TrainingPrivacy(noise_multiplier=1.0, sample_rate=0.5, steps=4)
    assert training_privacy(folder) == expected
    meta = read_meta(folder)
    assert training_privacy(meta) == expected and meta["steps"] == 4
    assert meta["privacy"]["epsilon"] == round(expected.epsilon(1e-5), 4)
    assert meta["recipe"]["dp"]["noise_multiplier"] == 1.0
    model = load_experts(load_policy("tiny-random"), folders)  # a PEFT adapter like any other expert
    assert set(model.peft_config) == {"seven"}

    with caplog.at_level("INFO", logger="fedgrpo.client.experts"):
        again, _ = ensure_experts(private_recipe(), {"seven": holding("7")}, cache)
    assert again == folders and "cached at" in caplog.text and "DP-SGD" not in caplog.text
    assert training_privacy(again["seven"]) == expected


def test_more_noise_trains_another_adapter_at_a_smaller_epsilon(cache: Path) -> None:
    from safetensors.torch import load_file

    folders = {}
    for noise in (1.0, 4.0):
        trained, _ = ensure_experts(
            private_recipe(DPSettings(noise_multiplier=noise)), {"c": holding("7")}, cache
        )
        folders[noise] = trained["c"]
    weights = {n: load_file(f / "adapter" / "adapter_model.safetensors") for n, f in folders.items()}
    assert weights[1.0].keys() == weights[4.0].keys()
    assert any(not torch.equal(weights[1.0][k], weights[4.0][k]) for k in weights[1.0])
    assert training_privacy(folders[4.0]).epsilon(1e-5) < training_privacy(folders[1.0]).epsilon(1e-5)


def test_a_non_private_expert_has_no_training_privacy(cache: Path, tmp_path: Path) -> None:
    recipe = ExpertRecipe("tiny-random", epochs=1, batch_size=8)
    folders, _ = ensure_experts(recipe, {"plain": holding("7")}, cache)
    assert training_privacy(folders["plain"]) is None
    assert training_privacy(read_meta(folders["plain"])) is None
    with pytest.raises(ValueError, match="not an expert folder"):
        training_privacy(tmp_path)


def test_an_empty_poisson_batch_still_takes_its_noise_step(tmp_path: Path) -> None:
    # batch 1 of 8: each step samples each example with probability 1/8, so some batches are empty
    folders, failed = ensure_experts(
        private_recipe(batch_size=1, epochs=1), {"sparse": holding("7")}, tmp_path
    )
    assert failed == {}
    privacy = read_meta(folders["sparse"])["privacy"]
    assert privacy["steps"] == 8 and privacy["sample_rate"] == 1 / 8
    assert privacy["empty_batches"] > 0  # taken and accounted for, not skipped


def test_epsilon_matches_dp_accounting_computed_independently() -> None:
    privacy = TrainingPrivacy(noise_multiplier=1.1, sample_rate=0.2, steps=10)
    accountant = PLDAccountant(NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-3)
    accountant.compose(SelfComposedDpEvent(PoissonSampledDpEvent(0.2, GaussianDpEvent(1.1)), 10))
    assert privacy.epsilon(1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    # Replacing one example is at least as costly as adding or removing one (Opacus's relation)
    add_remove = PLDAccountant(value_discretization_interval=1e-3)
    add_remove.compose(SelfComposedDpEvent(PoissonSampledDpEvent(0.2, GaussianDpEvent(1.1)), 10))
    assert privacy.epsilon(1e-5) > add_remove.get_epsilon(1e-5)
    # Every example in one step: the Gaussian mechanism of sensitivity 2 (a gradient and its opposite)
    assert TrainingPrivacy(2.0, 1.0, 1).epsilon(1e-5) == pytest.approx(
        get_epsilon_gaussian(1.0, 1e-5), rel=1e-2
    )
    # The distribution composes with others on the ledger's grid
    pld = privacy.pld(1e-3).compose(privacy.pld(1e-3))
    assert pld.get_epsilon_for_delta(1e-5) == pytest.approx(
        TrainingPrivacy(1.1, 0.2, 20).epsilon(1e-5), rel=1e-6
    )


def test_more_noise_less_epsilon_and_calibration_reaches_the_target() -> None:
    epsilons = [TrainingPrivacy(noise, 0.2, 10).epsilon(1e-5) for noise in (0.6, 1.0, 2.0)]
    assert epsilons == sorted(epsilons, reverse=True) and len(set(epsilons)) == 3
    noise = calibrate_noise(4.0, 1e-5, 0.2, 10)
    assert (
        TrainingPrivacy(noise, 0.2, 10).epsilon(1e-5)
        <= 4.0
        < TrainingPrivacy(noise * 0.99, 0.2, 10).epsilon(1e-5)
    )
    assert DPSettings(target_epsilon=4.0).noise_for(0.2, 10) == noise


def test_dp_settings_enter_the_cache_key_and_leave_non_private_keys_as_they_were() -> None:
    plain = ExpertRecipe("tiny-random", epochs=2)
    keys = {
        expert_key(r, holding("7"))
        for r in (
            plain,
            private_recipe(),
            private_recipe(DPSettings(noise_multiplier=2.0)),
            private_recipe(DPSettings(target_epsilon=4.0)),
            private_recipe(DPSettings(noise_multiplier=1.0, max_grad_norm=0.5)),
        )
    }
    assert len(keys) == 5
    assert expert_key(plain, holding("7")) == "be281fffbd35afa0fae4"  # as before DP-SGD
    # as before the adapter and optimiser options: the cached DP-SGD experts are still found
    assert expert_key(private_recipe(), holding("7")) == "fc06dee53a9949205400"
    narrow = DPSettings(noise_multiplier=1.0, lora_last_layers=2)
    assert expert_key(private_recipe(narrow), holding("7")) not in keys | {"fc06dee53a9949205400"}


def test_the_config_switches_dp_sgd_on_with_one_noise_source() -> None:
    on = ["clients.model=tiny-random", "clients.expert.method=sft", "clients.expert.dp.enabled=true"]
    cfg = load_config("smoke", on)
    recipe = ExpertRecipe.from_settings("tiny-random", cfg.clients.expert, 0)
    assert recipe.dp == DPSettings(target_epsilon=2.0)
    assert (
        ExpertRecipe.from_settings("tiny-random", load_config("smoke", on[:2]).clients.expert, 0).dp is None
    )
    with pytest.raises(
        (ValidationError, ValueError), match="exactly one of target_epsilon and noise_multiplier"
    ):
        load_config("smoke", [*on, "clients.expert.dp.noise_multiplier=1.0"])
    with pytest.raises((ValidationError, ValueError), match="SFT only"):
        load_config("smoke", [*on, "clients.expert.method=grpo"])


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_per_example_gradients_of_the_lora_expert_are_each_examples_own() -> None:
    """Why Opacus: its per-example gradients of the LoRA weights equal one backward pass per example."""
    from opacus import GradSampleModule
    from peft import get_peft_model

    from fedgrpo.client.experts import lora_config

    torch.manual_seed(0)
    net = get_peft_model(load_policy("tiny-random"), lora_config(ExpertRecipe("tiny-random")))
    for name, p in net.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would leave A's gradients zero
            torch.nn.init.normal_(p, std=0.1)
    examples = [
        Example(str(i), "d", q, a) for i, (q, a) in enumerate([(QUESTION, "7"), ("What is 12 + 30?", "42")])
    ]
    rows = training_rows(load_tokenizer("tiny-random"), examples, False)
    params = [p for p in net.parameters() if p.requires_grad]
    own = []
    for row in rows:
        net.zero_grad()
        per_example_loss(net, *padded_batch([row], 0)).sum().backward()
        own.append([p.grad.clone() for p in params])
    private = GradSampleModule(net, loss_reduction="mean")
    private.zero_grad()
    per_example_loss(private, *padded_batch(rows, 0)).mean().backward()
    for k in range(len(rows)):
        for p, g in zip(params, own[k], strict=True):
            torch.testing.assert_close(p.grad_sample[k], g, rtol=1e-4, atol=1e-6)


def test_the_config_narrows_dp_sgds_adapter_and_picks_its_optimiser(tmp_path: Path) -> None:
    narrow = [
        "clients.model=tiny-random",
        "clients.expert.method=sft",
        "clients.expert.dp.enabled=true",
        "clients.expert.dp.lora_modules=[v_proj]",
        "clients.expert.dp.lora_last_layers=1",
        "clients.expert.dp.optimizer=sgd",
        "clients.expert.lora_r=1",
    ]
    recipe = ExpertRecipe.from_settings("tiny-random", load_config("smoke", narrow).clients.expert, 0)
    assert recipe.dp is not None and recipe.dp.lora_modules == ("v_proj",) and recipe.dp.optimizer == "sgd"
    folders, failed = ensure_experts(recipe, {"seven": holding("7")}, tmp_path)
    assert failed == {}
    from safetensors.torch import load_file

    last = load_policy("tiny-random").config.num_hidden_layers - 1
    trained = load_file(folders["seven"] / "adapter" / "adapter_model.safetensors")
    assert trained and all(f"layers.{last}.self_attn.v_proj.lora_" in name for name in trained)
    assert sum(w.numel() for w in trained.values()) < 1000  # rank 1 on one module of one layer
    assert training_privacy(folders["seven"]) is not None


def test_the_loss_from_the_first_answer_token_is_the_loss_over_every_position() -> None:
    """The LM head skips the prompts (``per_example_loss``): the same per-row loss as over all of them."""
    model = load_policy("tiny-random")
    examples = [
        Example("0", "d", QUESTION, "7"),
        Example("1", "d", "What is 12 + 30, in words?", "forty-two"),
    ]
    ids, mask, labels = padded_batch(training_rows(load_tokenizer("tiny-random"), examples, False), 0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        every = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
        ).sum(1) / (labels[:, 1:] != -100).sum(1)
        torch.testing.assert_close(per_example_loss(model, ids, mask, labels), every)
