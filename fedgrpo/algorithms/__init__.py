"""Every method of the paper's comparison in one typed registry, FedGRPO first, then the baselines.

``fedgrpo run CONFIG method=NAME`` and ``fedgrpo suite`` both go through :func:`run_method`, so every
method writes the same run folder and ``results.json`` shape (name, method, before/after accuracy per
domain, communication with ``fed/bytes_down``/``fed/bytes_up``, train_seconds, steps,
seconds_per_step) on the same split, held-out set and seed. An :class:`Algorithm` names one run
function per ``federation.transport`` it has; each is imported only when it runs, so listing the
methods (``fedgrpo --help``, loading a config) loads no model code. FedGRPO's own code is the
package's rooms (``method/``, ``server/``, ``client/``, ...); its runs are a simulation in process or
on Flower's Simulation Engine (:mod:`fedgrpo.simulation`) and a deployment
(:mod:`fedgrpo.flower.launch`). A baseline has its module or folder here (``fedpetuning/``,
``dpsda/``: the in-process run in ``train``, the Flower run in ``flower``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from fedgrpo.config import FedGRPOConfig


class RunFunction(Protocol):
    def __call__(self, cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Entry:
    """A run function named ``"package.module:function"``, imported when it is loaded."""

    target: str

    def __post_init__(self) -> None:
        module, _, function = self.target.partition(":")
        if not module or not function.isidentifier():
            raise ValueError(f"{self.target!r} is not 'package.module:function'")

    def load(self) -> RunFunction:
        module, _, function = self.target.partition(":")
        found: RunFunction = getattr(importlib.import_module(module), function)
        return found


@dataclass(frozen=True)
class Algorithm:
    """One method: its ``method=`` name, a line on what it is, and its run on each transport it has
    (None: the config refuses that transport for it)."""

    name: str
    summary: str
    in_process: Entry
    flower_simulation: Entry | None = None
    flower_deployment: Entry | None = None

    def entry(self, transport: str) -> Entry | None:
        """The run for a ``federation.transport``: in_process, flower-simulation or flower-deployment."""
        by_transport = {
            "in_process": self.in_process,
            "flower-simulation": self.flower_simulation,
            "flower-deployment": self.flower_deployment,
        }
        return by_transport[transport]


ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm(
        "fedgrpo",
        "GRPO on the server with rewards from private clients' scalar scores (this project)",
        Entry("fedgrpo.simulation.in_process:run_in_process"),
        Entry("fedgrpo.simulation.flower:run_simulation_engine"),
        Entry("fedgrpo.flower.launch:run_deployment"),
    ),
    Algorithm(
        "zero-shot",
        "the untrained policy on the held-out set: the floor",
        Entry("fedgrpo.algorithms.zero_shot:run"),
    ),
    Algorithm(
        "central-grpo",
        "GRPO on the clients' labelled data pooled on the server: the upper reference",
        Entry("fedgrpo.algorithms.central_grpo:run"),
    ),
    Algorithm(
        "local-only",
        "FedGRPO with the rewards of one organisation alone, the most competent: the value of federating",
        Entry("fedgrpo.algorithms.local_only:run"),
    ),
    Algorithm(
        "fedpetuning",
        "clients fine-tune LoRA adapters on their own data, the server averages them",
        Entry("fedgrpo.algorithms.fedpetuning.train:run"),
        Entry("fedgrpo.algorithms.fedpetuning.flower:run_simulation_engine"),
    ),
    Algorithm(
        "dpsda-fl",
        "clients vote privately on synthetic data the server evolves and trains on",
        Entry("fedgrpo.algorithms.dpsda.train:run"),
        Entry("fedgrpo.algorithms.dpsda.flower:run_simulation_engine"),
    ),
)
REGISTRY: dict[str, Algorithm] = {a.name: a for a in ALGORITHMS}


def run_method(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg.method`` into ``cfg.output_dir``; returns its results (also in ``results.json``)."""
    entry = REGISTRY[cfg.method].entry(cfg.federation.transport)
    if entry is None:  # the config refuses these combinations
        raise ValueError(f"method={cfg.method} has no run on federation.transport={cfg.federation.transport}")
    return entry.load()(cfg, resume)
