"""The sections of a FedGRPO config: one typed, validated model per section.

The clients' sections (their models, experts, privacy) are in :mod:`fedgrpo.config.clients`, the
baselines' in :mod:`fedgrpo.config.baselines`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedgrpo.data import BUILTIN_DOMAINS, DomainSpec, resolve_domain
from fedgrpo.method.aggregation import MIN_ROBUST_EXPERTS, ROBUST_AGGREGATIONS, Aggregation
from fedgrpo.protocol import MAX_MESSAGE_BYTES

EMBEDDED_MODELS = ("smollm2", "tiny-random")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    enabled: bool = Field(True, description="train a LoRA adapter on the policy; false: train every weight")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: str | list[str] = Field(
        "all-linear", description="PEFT's target_modules: all-linear, or the module names"
    )


class ModelSettings(_Strict):
    """The server policy: an embedded model name, a Hugging Face id, or a local folder."""

    name_or_path: str = Field(
        "smollm2", description="smollm2 or tiny-random (embedded), a Hugging Face id, or a local folder"
    )
    lora: LoraSettings = LoraSettings()
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 only where the CPU has bf16 instructions (AMX, AVX-512 bf16)"
    )
    worked_example: bool = Field(True, description="show one worked example before each question")

    @field_validator("name_or_path")
    @classmethod
    def _path_exists(cls, value: str) -> str:
        return _check_model_name(value)


def _check_model_name(value: str) -> str:
    """An embedded model name, a Hugging Face id, or an existing local folder."""
    if value in EMBEDDED_MODELS:
        return value
    looks_local = value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()
    if looks_local and not Path(value).expanduser().is_dir():
        raise ValueError(
            f"model folder {value!r} does not exist; give an existing folder, a Hugging Face id, "
            f"or one of the embedded models {list(EMBEDDED_MODELS)}"
        )
    return value


def _check_whole_groups(section: str, method: str, batch_size: int, num_generations: int) -> None:
    """TRL's GRPO batches hold whole groups of completions: the batch must be a multiple of G."""
    if method == "grpo" and batch_size % num_generations:
        raise ValueError(
            f"{section}.batch_size ({batch_size}) must be a multiple of "
            f"{section}.num_generations ({num_generations}) for grpo"
        )


class DataSettings(_Strict):
    domains: list[str | DomainSpec] = Field(
        ["sums_1digit", "sums_2digit", "syllogism"],
        description="built-in domain names, or {name, source: gsm8k_jsonl | hf, ...} for your own",
    )
    setting: Literal["ground-truth", "no-ground-truth"] = Field(
        "ground-truth",
        description="ground-truth: training questions come from client data (one client holds each); "
        "no-ground-truth: no client holds any (the paper's Table 2), so only client models score them",
    )
    num_clients: int = Field(5, ge=1, description="K: simulated clients")
    partition: Literal["iid", "dirichlet", "by-domain"] = Field(
        "dirichlet",
        description="the clients' data over the domains; by-domain: client k holds domain k mod D only",
    )
    alpha: float = Field(0.5, gt=0.0, description="Dirichlet concentration: smaller is more non-IID")
    examples_per_client: int = Field(100, ge=1, description="labelled examples each client holds")
    num_train_questions: int = Field(200, ge=1, description="the server's training questions")
    num_auxiliary: int = Field(
        100, ge=0, description="labelled auxiliary questions: the confidence graph's exemplars"
    )
    heldout_per_domain: int = Field(100, ge=1, description="held-out evaluation questions per domain")

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str | DomainSpec]) -> list[str | DomainSpec]:
        if not value:
            raise ValueError(f"give at least one domain; built-in domains: {sorted(BUILTIN_DOMAINS)}")
        for item in value:
            spec = resolve_domain(item)  # raises ValueError naming the allowed domains
            if spec.source == "gsm8k_jsonl" and not Path(spec.path or "").expanduser().is_file():
                raise ValueError(f"domain {spec.name!r}: no file {spec.path!r}")
        return value

    def domain_specs(self) -> list[DomainSpec]:
        return [resolve_domain(item) for item in self.domains]


class ServerFiles(_Strict):
    """The server's own files, for a deployment (``federation.transport: flower-deployment``).

    In a deployment nothing is derived from a shared seed: the server brings its task (unlabelled
    questions), a small labelled auxiliary set (expert selection) and a labelled held-out set
    (evaluation), and each organisation brings its own labelled file to its SuperNode. JSONL, one
    object per line (see :mod:`fedgrpo.data.files`): ``question``, optional ``domain``, and ``answer``
    in the labelled files only.
    """

    questions: str | None = Field(None, description="unlabelled training questions (no answers)")
    auxiliary: str | None = Field(None, description="labelled auxiliary set, for the confidence graph")
    heldout: str | None = Field(None, description="labelled held-out set, for evaluation")
    canaries: str | None = Field(
        None,
        description="labelled canaries (hidden spot checks, federation.canaries): like the training "
        "questions, never shown to a client with answers, disjoint from the other files",
    )

    @field_validator("questions", "auxiliary", "heldout", "canaries")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no file {value!r}")
        return value

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.questions, self.auxiliary, self.heldout, self.canaries))


class CanarySettings(_Strict):
    """Hidden spot checks and each client's reputation (``docs/trust.md``): a share of the prompts are
    server-labelled canaries, routed like any question (and to ``fanout`` more clients); a client whose
    canary answers are confidently inconsistent with its own competence (or, without the confidence
    graph, whose honesty is below the threshold) is no longer asked and its rewards are left out."""

    share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of the training prompts that are canaries (never trained on: zero advantage); "
        "0: off. Simulations draw them from the domains, a deployment reads server.canaries",
    )
    threshold: float = Field(
        0.05,
        ge=-1.0,
        le=1.0,
        description="without margin or confidence graph: exclude a client once the upper bound of its "
        "honesty (per canary question, the share of right candidates it calls right less that of wrong "
        "ones, averaged) is below this",
    )
    margin: float | None = Field(
        0.15,
        ge=0.0,
        le=2.0,
        description="consistency, not level (needs the confidence graph): exclude a client once its "
        "honesty's upper bound is below its accuracy a on the competence queries less this, or the share "
        "of canaries where it calls a wrong candidate right is confidently above 1 - a + this (an honest "
        "expert does so only when wrong itself); null: the absolute threshold only",
    )
    fanout: int = Field(
        2, ge=0, description="each canary is also asked of this many trusted clients beyond the M experts"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="one-sided confidence of that upper bound")
    min_questions: int = Field(
        5,
        ge=2,
        description="no verdict from a test with fewer canary questions behind it",
    )


class FederationSettings(_Strict):
    experts_per_question: int = Field(2, ge=1, description="M: experts asked per question")
    selector: Literal["random", "all", "confidence-graph", "oracle"] = Field(
        "random",
        description="confidence-graph: the paper's competence routing (needs clients.model and an "
        "auxiliary set); oracle: true domain labels, for evaluation only (needs allow_oracle)",
    )
    neighbours: int = Field(20, ge=1, description="L: auxiliary exemplars a question attaches to")
    epsilon: float = Field(0.0, ge=0.0, le=1.0, description="share of questions routed at random")
    online_update_rate: float = Field(
        0.1, gt=0.0, le=1.0, description="EMA rate of the confidence graph's online updates"
    )
    allow_oracle: bool = Field(False, description="permit the oracle selector (evaluation only)")
    aggregation: Aggregation = Field(
        "mean",
        description="mean: normalise each expert's rewards over its G candidates, then average experts; "
        "pooled: normalise all of a question's rewards together; median / trimmed-mean (robust to one "
        "lying expert, need experts_per_question >= 3): per expert normalised, then per candidate the "
        "median, or the mean without the lowest and highest value",
    )
    format_reward: float = Field(
        0.1,
        ge=0.0,
        description="added by the server to each expert's reward for a candidate whose answer tag is "
        "well formed (clients send correctness only, in [0, 1])",
    )
    per_item_methods: bool = Field(
        False,
        description="clients report how they scored each item (answer/model/none), not only counts per "
        "reply; this tells the server which questions each client holds: for debugging only",
    )
    canaries: CanarySettings = CanarySettings()
    transport: Literal["in_process", "flower-simulation", "flower-deployment"] = Field(
        "in_process",
        description="in_process: clients live in the server's process; flower-simulation: Flower's "
        "Simulation Engine (Ray, N virtual clients); flower-deployment: a running Flower SuperLink with "
        "one SuperNode per organisation (see docs/deployment.md). Settings: the flower section",
    )

    @model_validator(mode="after")
    def _robust_needs_three(self) -> FederationSettings:
        m = self.experts_per_question
        if self.aggregation in ROBUST_AGGREGATIONS and m < MIN_ROBUST_EXPERTS:
            raise ValueError(
                f"federation.aggregation={self.aggregation} needs federation.experts_per_question >= "
                f"{MIN_ROBUST_EXPERTS} (got M={m}): it outvotes one lying expert only with two honest "
                "ones beside it; with fewer it is the mean"
            )
        return self


class FlowerSettings(_Strict):
    """How the Flower transports run (ignored by ``federation.transport: in_process``, but for
    ``max_message_bytes``, which every receiver applies)."""

    reward_timeout_s: float = Field(
        120.0, gt=0.0, description="per round: a client that has not answered by then is missing"
    )
    competence_timeout_s: float = Field(
        3600.0,
        gt=0.0,
        description="for the one-off competence queries (clients answer every auxiliary question)",
    )
    profile_timeout_s: float = Field(60.0, gt=0.0, description="for the join handshake")
    connect_timeout_s: float = Field(
        300.0, gt=0.0, description="how long the server waits at start for num_supernodes clients to join"
    )
    rejoin_interval_s: float = Field(
        15.0,
        gt=0.0,
        description="how often a client that failed or missed a round is probed to see if it is back "
        "(Flower and in-process)",
    )
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=1024,
        description="larger requests or replies are refused by the receiver before parsing (in-process too)",
    )
    num_supernodes: int | None = Field(
        None,
        ge=1,
        description="simulation: virtual clients (default data.num_clients); deployment: "
        "clients to wait for at start (default data.num_clients)",
    )
    client_cpus: float = Field(1.0, gt=0.0, description="simulation: CPUs Ray reserves per virtual client")
    ray_cpus: int | None = Field(None, ge=1, description="simulation: CPUs Ray may use (default: all)")
    superlink: str = Field(
        "127.0.0.1:9093", description="deployment: the SuperLink's address (host:port) for `flwr run`"
    )
    root_certificates: str | None = Field(
        None, description="deployment: CA certificate (PEM) that signed the SuperLink's TLS certificate"
    )
    insecure: bool = Field(False, description="deployment without TLS (loopback experiments only)")

    @field_validator("superlink")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"flower.superlink must be host:port, got {value!r}")
        return value


class EvalSettings(_Strict):
    before: bool = Field(True, description="evaluate the policy on the held-out set before training")
    after: bool = Field(True, description="evaluate it after training")
    max_new_tokens: int = Field(64, ge=1, description="greedy tokens per held-out answer")
    batch_size: int = Field(32, ge=1, description="held-out questions per generate call")
    max_per_domain: int | None = Field(None, ge=1, description="evaluate at most this many per domain")
    every_steps: int | None = Field(
        None,
        ge=1,
        description="also evaluate every this many GRPO steps, a learning curve in curve.jsonl; "
        "None: before and after only",
    )


class RunSettings(_Strict):
    output_dir: str = Field("runs/{name}", description="the run folder; {name} is the config's name")
    save_steps: int = Field(10, ge=1, description="a checkpoint every this many steps")
    save_total_limit: int = Field(
        2, ge=2, description="at least 2, so a torn save never leaves no checkpoint"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None keeps torch's default")
    device: Literal["cpu", "auto"] = Field(
        "cpu",
        description="auto: an accelerator when there is one, for the policy and, in a simulation, "
        "the organisations' in-process models",
    )
    share_prompts: bool = Field(
        True,
        description="read each distinct prompt once: when sampling (its KV cache copied to its rows, "
        "LoRA merged for calls of many rows and added in the few-row decode steps otherwise, a client "
        "model's recent prompt starts kept; server policy, evaluation, in-process client models) and in "
        "the GRPO loss forward, whose LM head projects only the completion positions; false: "
        "transformers' and TRL's own paths as they are",
    )
