"""The whole experiment's config: its sections, the checks across them, and TRL's ``GRPOConfig``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from fedgrpo.config.baselines import DpsdaSettings, FedPETuningSettings
from fedgrpo.config.clients import ClientSettings
from fedgrpo.config.grpo import check_grpo_settings
from fedgrpo.config.sections import (
    DataSettings,
    EvalSettings,
    FederationSettings,
    FlowerSettings,
    ModelSettings,
    RunSettings,
    ServerFiles,
    _Strict,
)
from fedgrpo.data import client_name

if TYPE_CHECKING:
    from trl import GRPOConfig


METHODS = ("fedgrpo", "zero-shot", "central-grpo", "local-only", "fedpetuning", "dpsda-fl")
Method = Literal["fedgrpo", "zero-shot", "central-grpo", "local-only", "fedpetuning", "dpsda-fl"]


class FedGRPOConfig(_Strict):
    name: str = Field("run", description="the run's name ({name} in run.output_dir)")
    method: Method = Field(
        "fedgrpo",
        description="fedgrpo (the federation's rewards), zero-shot (evaluation only), central-grpo "
        "(GRPO on the pooled labelled client data, ground-truth reward on the server), local-only (the "
        "rewards of the most competent organisation alone), or a baseline",
    )
    seed: int = Field(0, description="seeds the split, the sampling and the LoRA initialisation")
    model: ModelSettings = ModelSettings()
    data: DataSettings = DataSettings()
    federation: FederationSettings = FederationSettings()
    clients: ClientSettings = ClientSettings()
    grpo: dict[str, Any] = Field(default_factory=dict, description="passed to trl.GRPOConfig")
    eval: EvalSettings = EvalSettings()
    run: RunSettings = RunSettings()
    flower: FlowerSettings = FlowerSettings()
    server: ServerFiles = ServerFiles()
    dpsda: DpsdaSettings = DpsdaSettings()
    fedpetuning: FedPETuningSettings = FedPETuningSettings()

    @field_validator("grpo")
    @classmethod
    def _grpo(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_grpo_settings(value, trl_fields=_trl_checks(info))

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> FedGRPOConfig:
        fed = self.federation
        if self.method in ("zero-shot", "central-grpo", "local-only") and fed.transport != "in_process":
            raise ValueError(
                f"method={self.method} runs in process on the simulation's split: "
                "set federation.transport=in_process"
            )
        if self.method in ("fedpetuning", "dpsda-fl") and fed.transport == "flower-deployment":
            raise ValueError(
                f"method={self.method} runs in process or on Flower's Simulation Engine (the simulation's "
                "split): set federation.transport to in_process or flower-simulation"
            )
        if fed.transport == "flower-deployment":
            self._deployment()  # each party brings its own files and models: the data section is unused
        else:
            self._simulation()
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

    def _simulation(self) -> None:
        """Checks for a run whose experimenter builds every party's data and models from this config."""
        m, k = self.federation.experts_per_question, self.data.num_clients
        if m > k:
            raise ValueError(f"federation.experts_per_question (M={m}) must be <= data.num_clients (K={k})")
        if self.server.given:
            raise ValueError(
                "server.* files are for federation.transport=flower-deployment; a simulation builds "
                "every party's data from the data section"
            )
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
        self._adversaries()

    def _adversaries(self) -> None:
        """Adversaries name clients of this simulation; colluding takes at least two."""
        adversaries = self.clients.adversaries
        known = [client_name(k) for k in range(self.data.num_clients)]
        unknown = sorted(set(adversaries) - set(known))
        if unknown:
            raise ValueError(f"clients.adversaries: no client named {unknown}; the clients are {known}")
        colluders = [c for c, b in adversaries.items() if b == "colluding"]
        if len(colluders) == 1:
            raise ValueError(
                f"clients.adversaries: colluding needs two or more clients, got only {colluders[0]}"
            )

    def _deployment(self) -> None:
        """Checks for a deployment: the server's own files, and how many organisations to wait for."""
        if self.clients.adversaries:
            raise ValueError("clients.adversaries are simulated liars for experiments: simulation only")
        files = self.server
        missing = [k for k in ("questions", "heldout") if getattr(files, k) is None]
        if self.federation.selector == "confidence-graph" and files.auxiliary is None:
            missing.append("auxiliary")
        if self.federation.canaries.share > 0 and files.canaries is None:
            missing.append("canaries")
        if missing:
            raise ValueError(
                "federation.transport=flower-deployment needs the server's own files: "
                + ", ".join(f"server.{k}" for k in missing)
                + " (nothing is derived from a seed in a deployment; see docs/deployment.md)"
            )
        if self.federation.selector == "oracle":
            raise ValueError("federation.selector=oracle needs the clients' domain labels: simulation only")
        k = self.flower.num_supernodes
        if k is None:
            raise ValueError(
                "federation.transport=flower-deployment needs flower.num_supernodes: the organisations "
                "the server waits for at start (the data section is not used in a deployment)"
            )
        if self.federation.experts_per_question > k:
            raise ValueError(
                f"federation.experts_per_question (M={self.federation.experts_per_question}) must be <= "
                f"flower.num_supernodes ({k})"
            )

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
