"""The baselines' config sections (``fedpetuning``, ``dpsda``): the methods FedGRPO is compared with,
kept apart from the sections of the method itself (:mod:`fedgrpo.config.sections`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedgrpo.config.sections import _check_whole_groups, _Strict


class FedPETuningSettings(_Strict):
    """The ``fedpetuning`` baseline (:mod:`fedgrpo.algorithms.fedpetuning.train`): FedAvg of LoRA adapters.

    Each round a share of the clients continues the server's averaged adapter (LoRA on
    ``model.name_or_path`` with ``model.lora``'s rank, alpha, dropout and target modules; its
    ``enabled`` flag is not read: this method always trains adapters) on its own private examples
    for ``local_steps`` optimiser steps, by SFT or by GRPO rewarded by its own answer check, and the
    server averages the adapters weighted by each client's examples.
    """

    rounds: int = Field(10, ge=1, description="FedAvg rounds")
    local_steps: int = Field(5, ge=1, description="optimiser steps each selected client takes per round")
    method: Literal["sft", "grpo"] = Field(
        "sft", description="local training: sft on prompt -> <answer>...</answer>, or grpo on own rewards"
    )
    learning_rate: float = Field(5e-4, gt=0.0, description="the clients' local learning rate")
    batch_size: int = Field(8, ge=1, description="the clients' local batch size (grpo: completions)")
    clients_per_round: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="share of clients trained each round (at least one), as Flower's FedAvg fraction_train",
    )
    num_generations: int = Field(4, ge=2, description="grpo: completions sampled per question")
    max_completion_length: int = Field(32, ge=1, description="grpo: tokens per sampled completion")

    @model_validator(mode="after")
    def _grpo_batches(self) -> FedPETuningSettings:
        _check_whole_groups("fedpetuning", self.method, self.batch_size, self.num_generations)
        return self


DEFAULT_NOISE_MULTIPLIER = 4.0


class DpsdaSettings(_Strict):
    """The ``dpsda-fl`` baseline: Private Evolution (Lin et al. 2024; Aug-PE, Xie et al. 2024).

    For ``iterations`` rounds the server proposes ``samples`` synthetic question/answer pairs, each
    client releases a Gaussian-noised nearest-neighbour vote histogram over them, and the server keeps
    the best-voted ones and asks its policy for ``variations`` rewrites of each. The server then trains
    on the final synthetic set: ``sft_steps`` of SFT, then ``grpo_steps`` of GRPO (``grpo`` settings)
    with the synthetic answers as ground truth. Give ``noise_multiplier`` or ``target_epsilon``
    (the noise multiplier is then calibrated by dp-accounting to reach it at ``delta``). The defaults
    (N=64, T=5, sigma=4, delta=1e-5; docs/baselines.md says why) spend epsilon 2.45 per client (RDP).
    """

    iterations: int = Field(5, ge=1, description="T: vote rounds; each is one Gaussian mechanism per client")
    samples: int = Field(64, ge=2, description="N: synthetic samples proposed per iteration")
    noise_multiplier: float | None = Field(
        None,
        gt=0.0,
        description="sigma: the noise std per histogram bin (the L2 sensitivity is 1); None: "
        f"calibrated to target_epsilon when that is given, else {DEFAULT_NOISE_MULTIPLIER}",
    )
    target_epsilon: float | None = Field(
        None, gt=0.0, description="instead of noise_multiplier: the epsilon the T iterations may spend"
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="the delta of the reported (epsilon, delta)")
    accountant: Literal["rdp", "pld"] = Field("rdp", description="dp-accounting's accountant")
    threshold: float = Field(
        4.0, ge=0.0, description="H: summed noisy votes below this count as zero (PE's threshold)"
    )
    variations: int = Field(1, ge=1, description="rewrites the server asks for per kept sample")
    fewshot: int = Field(3, ge=1, description="auxiliary examples shown to the policy per proposal")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature of proposals and rewrites")
    max_new_tokens: int = Field(64, ge=8, description="tokens per proposed or rewritten sample")
    answers: Literal["proposed", "solved"] = Field(
        "proposed",
        description="the synthetic answers trained on: the proposer's (PE as published) or, 'solved', "
        "the value of the one arithmetic expression the question states (samples without one are "
        "dropped): right labels the clients never paid for, a favourable upper bound for the baseline",
    )
    sft_steps: int = Field(10, ge=0, description="SFT optimiser steps on the synthetic set")
    sft_learning_rate: float = Field(1e-4, gt=0.0, description="learning rate of the SFT steps")
    sft_batch_size: int = Field(8, ge=1, description="batch size of the SFT steps")
    grpo_steps: int | None = Field(
        None, ge=0, description="GRPO steps on the synthetic set; None: grpo.max_steps, as FedGRPO trains"
    )

    @model_validator(mode="after")
    def _one_noise_source(self) -> DpsdaSettings:
        if self.target_epsilon is not None and self.noise_multiplier is not None:
            raise ValueError(
                "give dpsda.noise_multiplier (sigma) or dpsda.target_epsilon (sigma is then calibrated "
                "to it at dpsda.delta), not both"
            )
        if self.sft_steps == 0 and self.grpo_steps == 0:
            raise ValueError("dpsda.sft_steps and dpsda.grpo_steps are both 0: the server trains nothing")
        return self
