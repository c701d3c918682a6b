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
import time
from pathlib import Path
from typing import Any

import yaml
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from fedgrpo.config import ConfigError, FedGRPOConfig, load_config_text
from fedgrpo.flower.client_app import make_client_app
from fedgrpo.flower.server_app import make_server_app
from fedgrpo.storage.run_folder import check_output_dir

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "app"  # the Flower app folder (pyproject.toml with [tool.flwr.app])


TRIPLE = "'" * 3


class RunFailed(RuntimeError):
    """The Flower run did not complete; the message carries Flower's status and its reason."""


def _absolute(cfg: FedGRPOConfig) -> FedGRPOConfig:
    """The config with absolute paths: the ServerApp runs in the SuperLink's working directory."""
    data = cfg.model_dump(mode="json")
    data["run"]["output_dir"] = str(cfg.output_dir.resolve())
    for key, value in data["server"].items():
        if value is not None:
            data["server"][key] = str(Path(value).expanduser().resolve())
    return FedGRPOConfig.model_validate(data)


def _results(cfg: FedGRPOConfig, since: float = 0.0) -> dict[str, Any]:
    """This run's ``results.json``; a file left by an earlier run is never returned."""
    path = cfg.output_dir / "results.json"
    if not path.exists() or path.stat().st_mtime < since:
        raise RunFailed(f"the Flower run ended without writing {path}; see {cfg.output_dir / 'run.log'}")
    return json.loads(path.read_text())


def run_on_flower(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    cfg = _absolute(cfg)
    if cfg.federation.transport == "flower-simulation":
        return run_simulation_engine(cfg, resume)
    return run_deployment(cfg, resume)


def run_simulation_engine(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """The whole run on Flower's Simulation Engine (Ray backend) with N virtual clients."""
    return simulate(cfg, make_server_app(cfg, resume), make_client_app(cfg.to_yaml()))


def virtual_client_config(config_text: str) -> FedGRPOConfig:
    """A virtual client's config in its Ray worker (the simulation's YAML), its torch threads set.

    A baseline's ClientApp caches what it builds from this per worker (``functools.cache``): Flower
    calls the app once per message, and a worker serves many."""
    import torch

    cfg = load_config_text(config_text, trl_checks=False)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    return cfg


def simulate(cfg: FedGRPOConfig, server_app: ServerApp, client_app: ClientApp) -> dict[str, Any]:
    """A ServerApp and ClientApp pair on the Simulation Engine, per the ``flower`` section; returns the
    ``results.json`` the ServerApp wrote (the fedpetuning baseline brings its own pair)."""
    fl = cfg.flower
    n = fl.num_supernodes or cfg.data.num_clients
    init_args: dict[str, Any] = {"logging_level": "error", "log_to_driver": True}
    if fl.ray_cpus:
        init_args["num_cpus"] = fl.ray_cpus
    backend = {"client_resources": {"num_cpus": fl.client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    log.info("Flower Simulation Engine: %d virtual clients, %s CPU each", n, fl.client_cpus)
    run_simulation(server_app, client_app, n, backend_config=backend)
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


def deployment_run_config(cfg: FedGRPOConfig, resume: bool) -> str:
    """The run config ``flwr run`` sends, as TOML. Flower hands it to every ClientApp too, so it carries
    the server's settings without the ``data`` recipe (a deployment derives nothing from it): no party
    learns from it anything about another party's data."""
    data = cfg.model_dump(mode="json")
    data.pop("data")
    yaml_text = yaml.safe_dump(data, sort_keys=False)
    if TRIPLE in yaml_text:
        raise ConfigError(f"the config contains {TRIPLE} and cannot travel in a TOML run config")
    return f'config = {TRIPLE}\n{yaml_text}{TRIPLE}\noverrides = ""\nresume = {str(resume).lower()}\n'


def _flwr(home: Path, *args: str, capture: bool = True) -> subprocess.CompletedProcess:
    flwr = shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"
    env = {**os.environ, "FLWR_HOME": str(home)}
    return subprocess.run([flwr, *args], env=env, check=False, capture_output=capture, text=True)


def _json_out(proc: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` printed (it may print other lines before it)."""
    text = proc.stdout or ""
    start = text.find("{")
    try:
        body = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise RunFailed(f"{what} failed (exit {proc.returncode}): {(proc.stderr or text).strip()[-2000:]}")
    if not body.get("success", False):
        raise RunFailed(f"{what} failed: {body.get('error-message') or body}")
    return body


def run_deployment(cfg: FedGRPOConfig, resume: bool = False) -> dict[str, Any]:
    """Submit the app to the SuperLink, stream its log, and fail unless Flower says it completed.

    ``flwr run --stream`` exits 0 even when the ServerApp fails, so the run is submitted, its log
    streamed with ``flwr log``, and its final status read with ``flwr list``; anything other than
    ``finished:completed`` raises :class:`RunFailed` with Flower's reason. A run folder that already
    holds a run is refused before anything is submitted.
    """
    check_output_dir(cfg, resume)
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    home = flwr_home(cfg, out / "flwr-home")
    run_config = out / "flower_run_config.toml"
    run_config.write_text(deployment_run_config(cfg, resume))
    log.info("submitting to the SuperLink at %s", cfg.flower.superlink)
    submitted = time.time()
    started = _json_out(
        _flwr(home, "run", str(APP_DIR), "fedgrpo", "--run-config", str(run_config), "--format", "json"),
        "`flwr run`",
    )
    run_id = str(started["run-id"])
    log.info("Flower run %s started; streaming its log", run_id)
    _flwr(home, "log", run_id, "fedgrpo", "--stream", capture=False)
    listed = _json_out(_flwr(home, "list", "fedgrpo", "--run-id", run_id, "--format", "json"), "`flwr list`")
    runs = listed.get("runs") or [{}]
    status, details = runs[0].get("status"), runs[0].get("status-details")
    if status != "finished:completed":
        raise RunFailed(f"Flower run {run_id} ended as {status!r}: {details}")
    return _results(cfg, since=submitted)
