"""Starting a FedGRPO run on a Flower engine.

``fedgrpo run CONFIG federation.transport=flower-simulation`` runs the Simulation Engine in this
process (Ray workers host the virtual clients); ``flower-deployment`` submits the app to a running
SuperLink with ``flwr run`` and streams its logs. Either way the ServerApp runs
:func:`fedgrpo.run.experiment.run` with a FlowerTransport and writes the usual run folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.flower.client_app import make_client_app
from fedgrpo.flower.server_app import make_server_app

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "app"  # the Flower app folder (pyproject.toml with [tool.flwr.app])


def _absolute(cfg: FedGRPOConfig) -> FedGRPOConfig:
    """The config with an absolute output folder: the ServerApp may run in another working directory."""
    data = cfg.model_dump(mode="json")
    data["run"]["output_dir"] = str(cfg.output_dir.resolve())
    return FedGRPOConfig.model_validate(data)


def _results(cfg: FedGRPOConfig) -> dict[str, Any]:
    path = cfg.output_dir / "results.json"
    if not path.exists():
        raise RuntimeError(f"the Flower run ended without {path}; see {cfg.output_dir / 'run.log'}")
    return json.loads(path.read_text())


def run_on_flower(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    cfg = _absolute(cfg)
    if cfg.federation.transport == "flower-simulation":
        return run_simulation_engine(cfg, resume)
    return run_deployment(cfg, resume)


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole run on Flower's Simulation Engine (Ray backend) with N virtual clients."""
    fl = cfg.flower
    n = fl.num_supernodes or cfg.data.num_clients
    init_args: dict[str, Any] = {"logging_level": "error", "log_to_driver": True}
    if fl.ray_cpus:
        init_args["num_cpus"] = fl.ray_cpus
    backend = {"client_resources": {"num_cpus": fl.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    log.info("Flower Simulation Engine: %d virtual clients, %s CPU each", n, fl.client_cpus)
    run_simulation(make_server_app(cfg, resume), make_client_app(cfg.to_yaml()), n, backend_config=backend)
    return _results(cfg)


def flwr_home(cfg: FedGRPOConfig, folder: Path) -> Path:
    """A private FLWR_HOME whose ``fedgrpo`` connection points at the configured SuperLink."""
    fl = cfg.flower
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "fedgrpo"', "", "[superlink.fedgrpo]", f'address = "{fl.superlink}"']
    if fl.insecure:
        lines.append("insecure = true")
    else:
        assert fl.root_certificates is not None  # the config refuses this combination
        lines.append(f'root-certificates = "{Path(fl.root_certificates).expanduser().resolve()}"')
    (folder / "config.toml").write_text("\n".join(lines) + "\n")
    return folder


def run_deployment(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Submit the app to the SuperLink with ``flwr run`` (logs streamed) and wait for the run."""
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    home = flwr_home(cfg, out / "flwr-home")
    yaml_text = cfg.to_yaml()
    if "'''" in yaml_text:
        raise ConfigError("the config contains ''' and cannot travel in a TOML run config")
    run_config = out / "flower_run_config.toml"
    run_config.write_text(f"config = '''\n{yaml_text}'''\noverrides = \"\"\nresume = {str(resume).lower()}\n")
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    cmd = [flwr, "run", str(APP_DIR), "fedgrpo", "--run-config", str(run_config), "--stream"]
    log.info("submitting to the SuperLink at %s: %s", cfg.flower.superlink, " ".join(cmd))
    proc = subprocess.run(cmd, env={**os.environ, "FLWR_HOME": str(home)}, check=False)
    if proc.returncode:
        raise RuntimeError(f"`flwr run` failed with exit code {proc.returncode}")
    return _results(cfg)
