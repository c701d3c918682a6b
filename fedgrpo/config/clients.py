"""The clients' sections of a FedGRPO config: each client's own model, its expert and its privacy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fedgrpo.config.sections import _check_model_name, _check_whole_groups, _Strict

AdversaryBehaviour = Literal["flip", "always-high", "random", "colluding", "aux-aware"]


class ExpertPrivacy(_Strict):
    """DP-SGD for each client's expert (``method: sft``), off unless ``enabled``: per-example gradients
    clipped to ``max_grad_norm``, Gaussian noise, Poisson-sampled batches (Opacus; see
    docs/trust.md#private-experts-dp-sgd). The guarantee is per example, replace-one (it covers a
    changed answer): ``epsilon`` at ``delta`` for the whole training, saved with the expert. Give the
    noise as ``noise_multiplier`` or ask for ``target_epsilon`` and the noise is calibrated to it.
    """

    enabled: bool = Field(False, description="train each client's expert with DP-SGD")
    target_epsilon: float | None = Field(
        2.0,
        gt=0.0,
        allow_inf_nan=False,
        description="the training's epsilon at delta, per example; the noise is calibrated to reach it "
        "(set null to give noise_multiplier instead)",
    )
    noise_multiplier: float | None = Field(
        None,
        ge=0.1,
        allow_inf_nan=False,
        description="noise std over max_grad_norm, at least 0.1; instead of target_epsilon",
    )
    max_grad_norm: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="per-example gradient clip")
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="delta of the training's (epsilon, delta)")
    lora_modules: list[str] | None = Field(
        None, description="the linear layers DP-SGD's LoRA adapts, e.g. [v_proj]; null: all of them"
    )
    lora_last_layers: int | None = Field(
        None, ge=1, description="adapt only the last N transformer layers; null: every layer"
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="the DP-SGD step: AdamW, or SGD with momentum 0.9 (noise averages out)"
    )

    @model_validator(mode="after")
    def _one_noise_source(self) -> ExpertPrivacy:
        if self.enabled and (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "clients.expert.dp needs exactly one of target_epsilon and noise_multiplier "
                "(target_epsilon defaults to 2.0: set it to null to give noise_multiplier)"
            )
        return self


class ExpertTraining(_Strict):
    """How each client turns ``clients.model`` into its own expert: a LoRA adapter on its private data.

    ``method: sft`` trains one LoRA adapter per client on that client's labelled examples only
    (prompt -> ``<answer>...</answer>``); ``grpo`` trains it with TRL's GRPO, rewarded by the client's
    own answer check. Adapters are cached under ``cache_dir`` keyed by base model, data and these
    settings, so a second run (or ``fedgrpo train-clients``) reuses them. ``none`` uses the base
    model as every client's model.
    """

    method: Literal["none", "sft", "grpo"] = Field(
        "none", description="how each client trains its expert adapter; none: the base as it is"
    )
    epochs: int = Field(2, ge=1, description="passes over the client's own data")
    learning_rate: float = Field(1e-3, gt=0.0, description="the expert's learning rate")
    batch_size: int = Field(8, ge=1, description="the expert's batch size (grpo: completions)")
    lora_r: int = Field(8, ge=1, description="the expert adapter's LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="the expert adapter's LoRA alpha")
    worked_example: bool = Field(
        False,
        description="put the worked example in the expert's prompt; an expert is trained to answer in "
        "tags, so it needs none, and the prompt is half as long (training and evaluation twice as fast)",
    )
    cache_dir: str | None = Field(
        None, description="where trained adapters are kept; default $FEDGRPO_CACHE/experts or ~/.cache"
    )
    num_generations: int = Field(4, ge=2, description="grpo: completions sampled per question")
    max_completion_length: int = Field(32, ge=1, description="grpo: tokens per sampled completion")
    dp: ExpertPrivacy = ExpertPrivacy()

    @model_validator(mode="after")
    def _grpo_batches(self) -> ExpertTraining:
        _check_whole_groups("clients.expert", self.method, self.batch_size, self.num_generations)
        if self.dp.enabled and self.method == "grpo":
            raise ValueError("clients.expert.dp trains with DP-SGD on SFT only; use method: sft")
        return self


class ClientPrivacy(_Strict):
    """Differentially private rewards at every simulated client (a deployed organisation sets its own
    in its node config, see docs/deployment.md). Off unless ``enabled``; docs/trust.md says what is
    promised.

    Every value a client sends (reward correctness, competence bit) is privatised with ``epsilon`` per
    value: randomised response for bits, ``continuous_mechanism`` for model scores in [0, 1] (a client
    whose model gives scores sends its answer checks as scores too). Label-level DP per example: an
    answer check is charged to the one example whose question it is, and no example goes past
    ``budget_epsilon`` at ``budget_delta``; nothing is withheld (an example at its budget, an item the
    client cannot judge, an answer past ``max_answers_per_question`` get free noise of the same form),
    so a reply does not tell which questions the client holds. The same (question, final answer)
    always gets the same released value.
    """

    enabled: bool = Field(False, description="privatise every value each simulated client sends")
    epsilon: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="epsilon per released value")
    budget_epsilon: float | None = Field(
        8.0,
        gt=0.0,
        allow_inf_nan=False,
        description="per example, over all runs; an example at it gets free noise; None: no cap (still "
        "reported)",
    )
    budget_delta: float = Field(1e-5, ge=0.0, lt=1.0, description="delta at which the spend is reported")
    binary_mechanism: Literal["randomized_response"] = Field(
        "randomized_response", description="for bits (answer check, agreement, competence)"
    )
    continuous_mechanism: Literal["laplace", "gaussian"] = Field(
        "laplace", description="for model scores in [0, 1] (clients.evaluation: likelihood)"
    )
    delta_per_value: float = Field(0.0, ge=0.0, lt=1.0, description="gaussian only: delta per value")
    max_answers_per_question: int = Field(
        8, ge=1, description="distinct final answers released per question; later ones get free noise"
    )
    hide_membership: bool = Field(
        True,
        description="false only to measure what hiding membership costs: items the client cannot judge "
        "then abstain (None) and the reply's method counts are real, which tells the server which "
        "questions it holds (a deployed organisation always hides)",
    )

    @model_validator(mode="after")
    def _gaussian_delta(self) -> ClientPrivacy:
        if self.continuous_mechanism == "gaussian" and self.delta_per_value <= 0:
            raise ValueError(
                "clients.privacy.delta_per_value must be positive for continuous_mechanism: gaussian"
            )
        if self.continuous_mechanism == "gaussian" and self.budget_delta <= self.delta_per_value:
            raise ValueError("clients.privacy.budget_delta must exceed delta_per_value (gaussian)")
        return self


class ClientSettings(_Strict):
    """The clients' own models, for model-based evaluation (ME) and for competence queries.

    ``model`` is an embedded name (``tiny-random``, ``smollm2``), a Hugging Face id or a local folder;
    None means no client model: clients then only score questions they hold (AE) and cannot answer
    the confidence graph's competence queries. The base model is loaded ONCE and shared: with
    ``expert.method: sft`` each client adds its own LoRA adapter on that one base (K clients cost one
    model plus K small adapters), otherwise every client uses the base as it is.
    """

    model: str | None = Field(
        None, description="the clients' base model (embedded name, hub id or folder); None: answers only"
    )
    expert: ExpertTraining = ExpertTraining()
    evaluation: Literal["agreement", "likelihood"] = Field(
        "agreement",
        description="model-based score: agreement with the client model's majority answer, or the "
        "likelihood it gives the candidate's answer",
    )
    samples: int = Field(4, ge=1, description="answers the client model samples per question")
    max_new_tokens: int = Field(48, ge=1, description="tokens per client model answer")
    temperature: float = Field(0.7, gt=0.0, description="the client model's sampling temperature")
    direct_answer: bool = Field(
        False,
        description="the client model's reply starts inside <answer> and stops at its close: what an "
        "SFT expert (trained to reply with the tagged answer alone) writes anyway, in a third of the "
        "decoded tokens; leave off for a client model that reasons first. In-process and organisation "
        "models only: an endpoint's chat API cannot start the reply, so it answers in full",
    )
    weights: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="fp16: the client model's linear weights held in fp16 and multiplied in fp32 "
        "(fbgemm, x86 CPUs): half the bytes a decode step reads, about 1.6x faster client calls, "
        "nearly all replies the same (each weight rounded to fp16), 0.3 to 0.6 GB more "
        "memory; fp32: as loaded. LoRA experts stay fp32 on the shared base. Kept fp32 on a GPU, "
        "where the torch build cannot pack, and for a deployed organisation's in-process model (its "
        "ClientApp process lives for one message, shorter than packing pays back)",
    )
    endpoint: str | None = Field(
        None,
        description="instead of model: base URL of an OpenAI-compatible server (transformers serve, "
        "vLLM) with the clients' model, e.g. http://127.0.0.1:8000/v1; every simulated client scores "
        "through it",
    )
    endpoint_model: str | None = Field(
        None, description="the model name the endpoint expects (transformers serve: its FOLDER argument)"
    )
    adversaries: dict[str, AdversaryBehaviour] = Field(
        default_factory=dict,
        description="simulation only, for robustness experiments: client name -> flip, always-high, "
        "random, colluding (two or more clients) or aux-aware (honest on questions shaped like the "
        "server's auxiliary ones, flipping on the others); see fedgrpo/simulation/adversaries.py",
    )
    privacy: ClientPrivacy = ClientPrivacy()

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str | None) -> str | None:
        return None if value is None else _check_model_name(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"clients.endpoint must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_model_source(self) -> ClientSettings:
        if self.endpoint is None:
            if self.endpoint_model is not None:
                raise ValueError("clients.endpoint_model needs clients.endpoint")
            return self
        if self.endpoint_model is None:
            raise ValueError(
                "clients.endpoint needs clients.endpoint_model: the model name the server expects"
            )
        if self.model is not None:
            raise ValueError(
                "clients.endpoint and clients.model are alternatives: the client model runs behind the "
                "endpoint or in this process, not both"
            )
        if self.expert.method != "none":
            raise ValueError(
                "clients.endpoint and clients.expert.method are exclusive: an organisation behind an "
                "endpoint serves its own expert"
            )
        return self

    @property
    def has_model(self) -> bool:
        """Whether clients have a model of their own, in process or behind an endpoint."""
        return self.model is not None or self.endpoint is not None
