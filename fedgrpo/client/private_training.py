"""DP-SGD training of a client's expert (``clients.expert.dp``) and the privacy that training costs.

An expert trained without privacy carries its organisation's data into every model score and
competence bit it later produces. Trained with DP-SGD, everything the expert does afterwards is
post-processing: the training's (epsilon, delta) is the whole cost, paid once per example.

Opacus 1.6 trains it, not torch's own per-sample gradients: on the LoRA Llama (tiny-random, PEFT
adapters on every linear layer) Opacus's hooks give each example's gradient of the LoRA weights to
2e-6 of that example's own backward pass. Its hooks need only ``nn.Linear`` (the LoRA A and B
matrices); the frozen base needs none. The recipe is SFT's: the evaluation prompt, the loss on the
``<answer>...</answer>`` completion tokens only, averaged per example, then over the batch (Opacus's
"mean" reduction), so an example's gradient is its own loss's gradient. Each step samples every
example with probability ``q = 1 / ceil(n / batch_size)`` (Poisson, Opacus's ``DPDataLoader``),
clips each example's gradient to ``max_grad_norm``, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` to the sum and takes an AdamW step; an empty batch still takes
its noise-only step, so the step count never depends on the data.

The accounting is our own (:class:`TrainingPrivacy`), not Opacus's: Opacus accounts for adding or
removing an example, and the project's DP is label-level (neighbouring datasets differ in one
example's answer, their size is public). That is the replace-one relation, which the privacy loss
distribution here uses (dp-accounting's ``REPLACE_ONE``: the replaced example's clipped gradients can
point in opposite directions, twice the add-or-remove sensitivity); it covers a changed answer, and a
changed question too. Noise is drawn from torch's generator seeded by the recipe (reproducible
caches), not a cryptographic source: fine for simulations, the only place experts are trained.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from fedgrpo.client.private_batches import padded_batch, per_example_loss, training_rows
from fedgrpo.data import Example

log = logging.getLogger(__name__)

PRIVACY_FILE = "training_privacy.json"  # next to the expert's adapter/ and expert.json
DISCRETISATION = 1e-3  # the PLD grid of epsilon(); pessimistic (an upper bound) on any grid
LATER_OPTIONS = ("lora_modules", "lora_last_layers", "optimizer")  # keyed only when not at default
MIN_NOISE = 0.1  # below it epsilon is in the thousands, and its PLD too large to compute


@dataclass(frozen=True)
class TrainingPrivacy:
    """The privacy loss of one DP-SGD training: Poisson-subsampled Gaussian, ``steps`` times.

    ``noise_multiplier``: noise standard deviation over the clipping norm; ``sample_rate``: each
    example's probability of being in a step's batch. Neighbouring relation: replace one example
    (a label-level change is one), see the module docstring.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be positive and finite, got {self.noise_multiplier!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps!r}")

    def pld(self, value_discretization_interval: float) -> Any:
        """The whole training's ``dp_accounting`` PrivacyLossDistribution (pessimistic estimate)."""
        from dp_accounting import NeighboringRelation
        from dp_accounting.pld import privacy_loss_distribution

        one_step = privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=self.noise_multiplier,
            sensitivity=1.0,
            value_discretization_interval=value_discretization_interval,
            sampling_prob=self.sample_rate,
            neighboring_relation=NeighboringRelation.REPLACE_ONE,
        )
        return one_step.self_compose(self.steps)

    def values(self) -> dict[str, Any]:
        """What determines the PLD: the key the ledger caches its compositions under."""
        return asdict(self)

    def epsilon(self, delta: float) -> float:
        """The training's epsilon at ``delta``."""
        return float(self.pld(DISCRETISATION).get_epsilon_for_delta(delta))


@dataclass(frozen=True)
class DPSettings:
    """``clients.expert.dp`` as the recipe (and the cache key) holds it: exactly one of
    ``noise_multiplier`` and ``target_epsilon`` (the noise is then calibrated to reach it at ``delta``)."""

    max_grad_norm: float = 1.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    lora_modules: tuple[str, ...] | None = None  # None: every linear layer
    lora_last_layers: int | None = None  # None: every transformer layer
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)

    def __post_init__(self) -> None:  # the config validates with field names; this guards direct use
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("DP-SGD needs exactly one of noise_multiplier and target_epsilon")
        if not self.max_grad_norm > 0 or not 0 < self.delta < 1:
            raise ValueError("DP-SGD needs max_grad_norm > 0 and delta in (0, 1)")
        if self.noise_multiplier is not None and not self.noise_multiplier >= MIN_NOISE:
            raise ValueError(f"DP-SGD's noise_multiplier must be at least {MIN_NOISE}")

    @classmethod
    def from_settings(cls, settings: Any) -> DPSettings | None:
        """The recipe's DP settings from ``clients.expert.dp`` (an ``ExpertPrivacy``); None when off."""
        if not settings.enabled:
            return None
        fields = {f: getattr(settings, f) for f in cls.__dataclass_fields__}  # by name: no order to keep
        fields["lora_modules"] = tuple(settings.lora_modules) if settings.lora_modules else None
        return cls(**fields)

    def adapter(self, peft_config: Any, model: Any) -> Any:
        """``peft_config`` narrowed to ``lora_modules`` in the last ``lora_last_layers`` layers: DP-SGD's
        noise grows with the square root of the trainable weights, its signal does not."""
        if self.lora_modules is None and self.lora_last_layers is None:
            return peft_config
        import dataclasses

        import torch

        linear = {  # "all-linear" in the transformer layers, by name (a layer list needs names)
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name
        }
        modules = list(self.lora_modules or sorted(linear))
        layers = model.config.num_hidden_layers
        first = None if self.lora_last_layers is None else max(0, layers - self.lora_last_layers)
        last = None if first is None else list(range(first, layers))
        return dataclasses.replace(peft_config, target_modules=modules, layers_to_transform=last)

    def noise_for(self, sample_rate: float, steps: int) -> float:
        """The noise multiplier: as set, or the smallest reaching ``target_epsilon`` at ``delta``."""
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        assert self.target_epsilon is not None
        return calibrate_noise(self.target_epsilon, self.delta, sample_rate, steps)


def dp_key_fields(dp: DPSettings | None) -> dict[str, Any]:
    """The DP settings in the expert cache's key: none without DP, and the adapter and optimiser
    options only when set, so the experts trained before those options existed keep their keys."""
    if dp is None:
        return {}
    unset = {f.name: f.default for f in fields(DPSettings) if f.name in LATER_OPTIONS}
    return {"dp": {k: v for k, v in asdict(dp).items() if k not in unset or v != unset[k]}}


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier (to 0.1%) whose training reaches at most ``target_epsilon`` at ``delta``.

    Bisection on :meth:`TrainingPrivacy.epsilon` itself, so the reported epsilon is the one
    calibrated (epsilon falls as the noise grows).
    """

    def eps(sigma: float) -> float:
        return TrainingPrivacy(sigma, sample_rate, steps).epsilon(delta)

    low, high = MIN_NOISE, 1.0
    while eps(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier up to 1e4 reaches epsilon {target_epsilon} at {delta}")
    while high / low > 1.001:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if eps(mid) <= target_epsilon else (mid, high)
    return high


def training_privacy(expert: str | Path | Mapping[str, Any]) -> TrainingPrivacy | None:
    """What training the expert cost: from its folder (the cache's, or an organisation's adapter
    folder) or its metadata (``expert.json`` as read); None for an expert trained without privacy."""
    if isinstance(expert, Mapping):
        saved = expert.get("privacy")
    else:
        folder = Path(expert)
        if not (folder / "adapter").is_dir():
            raise ValueError(f"{folder} is not an expert folder (no adapter/ in it)")
        path = folder / PRIVACY_FILE
        saved = json.loads(path.read_text()) if path.exists() else None
    if saved is None:
        return None
    return TrainingPrivacy(float(saved["noise_multiplier"]), float(saved["sample_rate"]), int(saved["steps"]))


class PrivateRecipe(Protocol):
    """The parts of an ``ExpertRecipe`` DP-SGD training reads."""

    epochs: int
    learning_rate: float
    batch_size: int
    worked_example: bool
    seed: int
    dp: DPSettings | None


def _steps(
    model: Any, optimiser: Any, loader: Any, rows: list[tuple[list[int], int]], pad: int, epochs: int
) -> tuple[list[float], int]:
    """Every DP-SGD step over Poisson batches of ``rows``: each step's mean loss, and the empty steps.

    An empty batch still takes its noise-only step (one row's forward, weighted zero).
    """
    losses: list[float] = []
    empty = 0
    with warnings.catch_warnings():
        # Opacus's hooks on LoRA layers whose inputs need no gradient (the frozen base's) warn at every
        # backward; their per-example gradients are exact (checked against per-example backward passes).
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for _ in range(epochs):
            for (picked,) in loader:
                optimiser.zero_grad()
                batch = padded_batch([rows[i] for i in picked.tolist()] or rows[:1], pad)
                loss = per_example_loss(model, *batch)
                (loss.mean() * (1.0 if len(picked) else 0.0)).backward()
                optimiser.step()
                if len(picked):
                    losses.append(float(loss.detach().mean()))
                else:
                    empty += 1
    return losses, empty


def train_private(
    recipe: PrivateRecipe, model: Any, tokenizer: Any, examples: list[Example], out: Path, peft_config: Any
) -> dict[str, Any]:
    """DP-SGD of a fresh LoRA adapter (``peft_config``) on ``model``; writes ``out/adapter`` and
    ``out/PRIVACY_FILE`` and returns the training summary (steps, losses, the privacy spent)."""
    import torch
    from opacus import PrivacyEngine
    from peft import get_peft_model
    from torch.utils.data import DataLoader, TensorDataset

    dp = recipe.dp
    assert dp is not None
    torch.manual_seed(recipe.seed)
    rows = training_rows(tokenizer, examples, recipe.worked_example)
    batches = math.ceil(len(rows) / recipe.batch_size)
    sample_rate, steps = 1 / batches, recipe.epochs * batches
    noise = dp.noise_for(sample_rate, steps)
    net = get_peft_model(model, dp.adapter(peft_config, model))
    net.train()
    weights = [p for p in net.parameters() if p.requires_grad]
    optimiser = (
        torch.optim.SGD(weights, lr=recipe.learning_rate, momentum=0.9)
        if dp.optimizer == "sgd"
        else torch.optim.AdamW(weights, lr=recipe.learning_rate)
    )
    indices = DataLoader(
        TensorDataset(torch.arange(len(rows))),
        batch_size=recipe.batch_size,
        generator=torch.Generator().manual_seed(recipe.seed),
    )
    with warnings.catch_warnings():  # the noise's source is documented above
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        engine = PrivacyEngine(accountant="prv")
    private, optimiser, loader = engine.make_private(
        module=net,
        optimizer=optimiser,
        data_loader=indices,
        noise_multiplier=noise,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(recipe.seed + 1),
    )
    if not math.isclose(loader.sample_rate, sample_rate):  # what is accounted is what Opacus samples
        raise RuntimeError(f"Opacus samples at rate {loader.sample_rate}, accounted {sample_rate}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses, empty = _steps(private, optimiser, loader, rows, pad, recipe.epochs)
    if len(losses) + empty != steps:
        raise RuntimeError(f"DP-SGD took {len(losses) + empty} steps, not the {steps} accounted for")
    net.save_pretrained(out / "adapter")
    privacy = TrainingPrivacy(noise, sample_rate, steps)
    spent = {
        **asdict(privacy),
        "max_grad_norm": dp.max_grad_norm,
        "delta": dp.delta,
        "epsilon": round(privacy.epsilon(dp.delta), 4),
        "neighbouring_relation": "replace one example",
        "empty_batches": empty,
    }
    (out / PRIVACY_FILE).write_text(json.dumps(spent, indent=2))
    log.info(
        "DP-SGD: %d steps at sample rate %.3f, noise multiplier %.3f: epsilon %.3f at delta %g",
        steps,
        sample_rate,
        noise,
        spent["epsilon"],
        dp.delta,
    )
    return {
        "steps": steps,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "first_reward": None,
        "final_reward": None,
        "train_loss": round(sum(losses) / len(losses), 4) if losses else None,
        "privacy": spent,
    }
