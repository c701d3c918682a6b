"""One typed, validated configuration for a FedGRPO run.

A run is described by a YAML file (or a built-in preset name) plus ``key=value`` overrides with dotted
keys, e.g. ``fedgrpo run smoke grpo.max_steps=3 federation.selector=all``. Everything is checked
before any model loads: unknown keys, impossible values and missing paths fail with the field name
and the allowed values. TRL's GRPO settings pass through under ``grpo`` and are checked against
``trl.GRPOConfig``'s own fields.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedgrpo.data import BUILTIN_DOMAINS, DomainSpec, resolve_domain

if TYPE_CHECKING:
    from trl import GRPOConfig

PRESETS = ("smoke", "default", "graph-smoke")
EMBEDDED_MODELS = ("smollm2", "tiny-random")

# GRPO settings FedGRPO owns: the federated objective computes the advantages itself, so TRL must
# neither rescale them nor combine several reward functions.
RESERVED_GRPO_KEYS = {
    "output_dir": "run.output_dir",
    "reward_weights": "federation.aggregation",
    "multi_objective_aggregation": "federation.aggregation",
    "scale_rewards": "federation.aggregation",
    "seed": "seed",
    "use_cpu": "run.device",
    "save_steps": "run.save_steps",
    "resume_from_checkpoint": "fedgrpo run --resume",
}


# FedGRPO's GRPO defaults (sized for a CPU), merged under the user's ``grpo`` settings so that
# ``show-config`` prints every value the run uses. Anything else falls to trl.GRPOConfig's own default.
GRPO_DEFAULTS: dict[str, Any] = {
    "max_steps": 20,
    "num_generations": 8,
    "per_device_train_batch_size": 16,
    "max_completion_length": 64,
    "learning_rate": 5e-5,
    "beta": 0.0,
    "temperature": 1.0,
    "logging_steps": 1,
    "report_to": "none",
    "log_completions": False,
    "bf16": False,
}
# Numeric GRPO settings that must be positive (TRL accepts a negative length or learning rate and
# fails, or silently misbehaves, only once the model is loaded).
_GRPO_POSITIVE = (
    "max_completion_length",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_iterations",
    "temperature",
    "logging_steps",
    "max_prompt_length",
    "generation_batch_size",
    "steps_per_generation",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class ModelSettings(_Strict):
    """The server policy: an embedded model name, a Hugging Face id, or a local folder."""

    name_or_path: str = "smollm2"
    lora: LoraSettings = LoraSettings()
    dtype: Literal["float32", "bfloat16"] = "float32"
    worked_example: bool = True

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


class ExpertTraining(_Strict):
    """How each client turns ``clients.model`` into its own expert: a LoRA adapter on its private data.

    ``method: sft`` trains one LoRA adapter per client on that client's labelled examples only
    (prompt -> ``<answer>...</answer>``); ``grpo`` trains it with TRL's GRPO, rewarded by the client's
    own answer check. Adapters are cached under ``cache_dir`` keyed by base model, data and these
    settings, so a second run (or ``fedgrpo train-clients``) reuses them. ``none`` uses the base
    model as every client's model.
    """

    method: Literal["none", "sft", "grpo"] = "none"
    epochs: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(8, ge=1)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
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

    @model_validator(mode="after")
    def _grpo_batches(self) -> ExpertTraining:
        if self.method == "grpo" and self.batch_size % self.num_generations:
            raise ValueError(
                f"clients.expert.batch_size ({self.batch_size}) must be a multiple of "
                f"clients.expert.num_generations ({self.num_generations}) for grpo"
            )
        return self


class ClientSettings(_Strict):
    """The clients' own models, for model-based evaluation (ME) and for competence queries.

    ``model`` is an embedded name (``tiny-random``, ``smollm2``), a Hugging Face id or a local folder;
    None means no client model: clients then only score questions they hold (AE) and cannot answer
    the confidence graph's competence queries. The base model is loaded ONCE and shared: with
    ``expert.method: sft`` each client adds its own LoRA adapter on that one base (K clients cost one
    model plus K small adapters), otherwise every client uses the base as it is.
    """

    model: str | None = None
    expert: ExpertTraining = ExpertTraining()
    evaluation: Literal["agreement", "likelihood"] = "agreement"
    samples: int = Field(4, ge=1, description="answers the client model samples per question")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0.0)
    endpoint: str | None = Field(
        None,
        description="instead of model: base URL of an OpenAI-compatible server (transformers serve, "
        "vLLM) with the clients' model, e.g. http://127.0.0.1:8000/v1; every simulated client scores "
        "through it",
    )
    endpoint_model: str | None = Field(
        None, description="the model name the endpoint expects (transformers serve: its FOLDER argument)"
    )

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


class DataSettings(_Strict):
    domains: list[str | DomainSpec] = ["sums_1digit", "sums_2digit", "syllogism"]
    setting: Literal["ground-truth", "no-ground-truth"] = Field(
        "ground-truth",
        description="ground-truth: training questions come from client data (one client holds each); "
        "no-ground-truth: no client holds any (the paper's Table 2), so only client models score them",
    )
    num_clients: int = Field(5, ge=1)
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = Field(0.5, gt=0.0)
    examples_per_client: int = Field(100, ge=1)
    num_train_questions: int = Field(200, ge=1)
    num_auxiliary: int = Field(100, ge=0)
    heldout_per_domain: int = Field(100, ge=1)

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str | DomainSpec]) -> list[str | DomainSpec]:
        if not value:
            raise ValueError(f"give at least one domain; built-in domains: {sorted(BUILTIN_DOMAINS)}")
        for item in value:
            resolve_domain(item)  # raises ValueError naming the allowed domains
        return value

    def domain_specs(self) -> list[DomainSpec]:
        return [resolve_domain(item) for item in self.domains]


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
    aggregation: Literal["mean", "pooled"] = Field(
        "mean",
        description="mean: normalise each expert's rewards over its G candidates, then average experts; "
        "pooled: normalise all of a question's rewards together",
    )
    format_reward: float = Field(
        0.1, ge=0.0, description="added by clients when the answer tag is well formed"
    )
    transport: Literal["in_process", "flower-simulation", "flower-deployment"] = Field(
        "in_process",
        description="in_process: clients live in the server's process; flower-simulation: Flower's "
        "Simulation Engine (Ray, N virtual clients); flower-deployment: a running Flower SuperLink with "
        "one SuperNode per organisation (see docs/deployment.md). Settings: the flower section",
    )


class FlowerSettings(_Strict):
    """How the Flower transports run (ignored by ``federation.transport: in_process``)."""

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
        15.0, gt=0.0, description="how often a client that missed a round is probed to see if it is back"
    )
    max_message_bytes: int = Field(
        64 * 2**20, ge=1024, description="larger requests or replies are refused on the receiving side"
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
    before: bool = True
    after: bool = True
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=1)
    max_per_domain: int | None = Field(None, ge=1)


class RunSettings(_Strict):
    output_dir: str = "runs/{name}"
    save_steps: int = Field(10, ge=1)
    save_total_limit: int = Field(
        2, ge=2, description="at least 2, so a torn save never leaves no checkpoint"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None keeps torch's default")
    device: Literal["cpu", "auto"] = "cpu"


class FedGRPOConfig(_Strict):
    name: str = "run"
    seed: int = 0
    model: ModelSettings = ModelSettings()
    data: DataSettings = DataSettings()
    federation: FederationSettings = FederationSettings()
    clients: ClientSettings = ClientSettings()
    grpo: dict[str, Any] = Field(default_factory=dict, description="passed to trl.GRPOConfig")
    eval: EvalSettings = EvalSettings()
    run: RunSettings = RunSettings()
    flower: FlowerSettings = FlowerSettings()

    @field_validator("grpo")
    @classmethod
    def _known_grpo_keys(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        fields = grpo_config_fields() if _trl_checks(info) else None
        for key, given in value.items():
            if key in RESERVED_GRPO_KEYS:
                raise ValueError(f"grpo.{key} is set by FedGRPO; use {RESERVED_GRPO_KEYS[key]} instead")
            if fields is None:
                continue
            if key not in fields:
                close = [k for k in fields if key.split("_")[0] in k][:8]
                raise ValueError(f"grpo.{key} is not a trl.GRPOConfig field (similar: {close})")
            _check_grpo_type(key, given, fields[key])
        value = {**GRPO_DEFAULTS, **value}
        g = value["num_generations"]
        if not isinstance(g, int) or isinstance(g, bool) or g < 2:
            raise ValueError(
                f"grpo.num_generations must be an integer >= 2 (got {g!r}): GRPO compares candidates"
            )
        for key in _GRPO_POSITIVE:
            v = value.get(key)
            if v is not None and not v > 0:
                raise ValueError(f"grpo.{key} must be > 0, got {v!r}")
        if value["max_steps"] == 0 or value["max_steps"] < -1:
            raise ValueError(
                f"grpo.max_steps must be >= 1 (or -1: train by epochs), got {value['max_steps']!r}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> FedGRPOConfig:
        m, k = self.federation.experts_per_question, self.data.num_clients
        if m > k:
            raise ValueError(f"federation.experts_per_question (M={m}) must be <= data.num_clients (K={k})")
        fed = self.federation
        if fed.selector == "confidence-graph":
            if not self.clients.has_model:
                raise ValueError(
                    "federation.selector=confidence-graph needs clients.model (or clients.endpoint): the "
                    "clients must answer the auxiliary questions with a model of their own"
                )
            if self.data.num_auxiliary < 1:
                raise ValueError(
                    "federation.selector=confidence-graph needs data.num_auxiliary >= 1 "
                    "(the auxiliary questions are the graph's exemplars)"
                )
        if self.data.setting == "no-ground-truth" and not self.clients.has_model:
            raise ValueError(
                "data.setting=no-ground-truth needs clients.model (or clients.endpoint): no client holds "
                "the training questions' answers, so only the clients' own models can score them"
            )
        if self.clients.expert.method != "none" and self.clients.model is None:
            raise ValueError(
                "clients.expert.method needs clients.model: the base the experts are trained from"
            )
        fl = self.flower
        if fed.transport == "flower-deployment" and not fl.insecure:
            if fl.root_certificates is None:
                raise ValueError(
                    "federation.transport=flower-deployment needs flower.root_certificates (the CA that "
                    "signed the SuperLink's certificate; `fedgrpo flower-certs DIR` makes a test one), "
                    "or flower.insecure=true for a loopback experiment"
                )
            if not Path(fl.root_certificates).expanduser().is_file():
                raise ValueError(f"flower.root_certificates: no file {fl.root_certificates!r}")
        if fl.reward_timeout_s > fl.competence_timeout_s:
            raise ValueError(
                "flower.reward_timeout_s must be <= flower.competence_timeout_s: a competence query "
                "answers many more questions than one reward round"
            )
        if fed.selector == "oracle" and not fed.allow_oracle:
            raise ValueError(
                "federation.selector=oracle uses true domain labels; for evaluation only: "
                "set federation.allow_oracle=true to run it"
            )
        if _trl_checks(info):
            with tempfile.TemporaryDirectory() as tmp:
                try:  # TRL's own checks (batch sizes against G, ...), before any model loads
                    self.grpo_arguments(Path(tmp))
                except (ValueError, TypeError) as err:
                    raise ValueError(f"grpo: {err}") from None
        return self

    def grpo_arguments(self, output_dir: Path) -> GRPOConfig:
        """TRL's ``GRPOConfig`` for this run: the ``grpo`` settings plus those FedGRPO owns."""
        from trl import GRPOConfig

        return GRPOConfig(
            **self.grpo,
            output_dir=str(output_dir),
            seed=self.seed,
            use_cpu=self.run.device == "cpu",
            scale_rewards="none",  # the federated objective already normalised per expert
            save_strategy="steps",
            save_steps=self.run.save_steps,
            save_total_limit=self.run.save_total_limit,
        )

    @property
    def num_generations(self) -> int:
        return int(self.grpo["num_generations"])

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir.format(name=self.name))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _trl_checks(info: ValidationInfo) -> bool:
    """False when validating with ``trl_checks=False``: a client process trains nothing, and TRL
    (with torch and transformers) is a heavy import it need not have; the server checked ``grpo``."""
    return bool((info.context or {}).get("trl_checks", True))


@functools.cache
def grpo_config_fields() -> dict[str, Any]:
    """trl.GRPOConfig's fields and their defaults (MISSING where there is none)."""
    from trl import GRPOConfig

    return {
        f.name: f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        for f in dataclasses.fields(GRPOConfig)
    }


def _check_grpo_type(key: str, value: Any, default: Any) -> None:
    """A value of the kind GRPOConfig's default has (bool, int or float); others pass to TRL."""
    if value is None or default is None or default is dataclasses.MISSING:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        return
    if not ok:
        raise ValueError(f"grpo.{key} must be a {type(default).__name__}, got {value!r}")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and what is allowed."""


def _read_source(source: str | Path) -> dict[str, Any]:
    if str(source) in PRESETS:
        text = resources.files("fedgrpo.presets").joinpath(f"{source}.yaml").read_text()
        origin = f"preset {source!r}"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(
                f"config {str(source)!r} is neither a file nor a preset; presets: {list(PRESETS)}"
            )
        text, origin = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping at the top level, not {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (so 3, true, [a, b] work)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value, e.g. grpo.max_steps=5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {assignment!r} has an empty key part")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: cannot parse value: {err}") from err


def load_config(
    source: str | Path, overrides: list[str] | tuple[str, ...] = (), *, trl_checks: bool = True
) -> FedGRPOConfig:
    """Load a preset or YAML file, apply overrides, validate. Raises ConfigError with readable text.

    ``trl_checks=False`` skips checking ``grpo`` against TRL (a client process; see _trl_checks)."""
    return config_from_mapping(_read_source(source), overrides, trl_checks=trl_checks)


def load_config_text(
    text: str, overrides: list[str] | tuple[str, ...] = (), *, trl_checks: bool = True
) -> FedGRPOConfig:
    """A preset name, a YAML file, or YAML text itself (how a Flower run config carries a config)."""
    if text in PRESETS or ("\n" not in text and len(text) < 4096 and Path(text).is_file()):
        return load_config(text, overrides, trl_checks=trl_checks)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config text is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config {text[:80]!r} is neither a preset, a file nor a YAML mapping")
    return config_from_mapping(data, overrides, trl_checks=trl_checks)


def config_from_mapping(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), *, trl_checks: bool = True
) -> FedGRPOConfig:
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return FedGRPOConfig.model_validate(data, context={"trl_checks": trl_checks})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "config"
            lines.append(f"  {where}: {e['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
