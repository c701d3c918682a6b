"""Starting a FedGRPO run on Flower's Deployment Engine.

``fedgrpo run CONFIG federation.transport=flower-deployment`` submits the app to a running SuperLink
with ``flwr run`` and streams its logs; the ServerApp runs :func:`fedgrpo.run.experiment.run` with a
FlowerTransport and writes the usual run folder. (``flower-simulation`` runs the Simulation Engine in
this process: :mod:`fedgrpo.simulation.flower`.)
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

from fedgrpo.config import ConfigError, FedGRPOConfig
from fedgrpo.flower.run_config import TOKEN_KEY, save_server_config
from fedgrpo.storage.run_folder import check_output_dir

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "app"  # the Flower app folder (pyproject.toml with [tool.flwr.app])


TRIPLE = "'" * 3


class RunFailed(RuntimeError):
    """The Flower run did not complete; the message carries Flower's status and its reason."""


def absolute_paths(cfg: FedGRPOConfig) -> FedGRPOConfig:
    """The config with absolute paths: the ServerApp runs in the SuperLink's working directory."""
    data = cfg.model_dump(mode="json")
    data["run"]["output_dir"] = str(cfg.output_dir.resolve())
    for key, value in data["server"].items():
        if value is not None:
            data["server"][key] = str(Path(value).expanduser().resolve())
    return FedGRPOConfig.model_validate(data)


def run_results(cfg: FedGRPOConfig, since: float = 0.0) -> dict[str, Any]:
    """This run's ``results.json``; a file left by an earlier run is never returned."""
    path = cfg.output_dir / "results.json"
    if not path.exists() or path.stat().st_mtime < since:
        raise RunFailed(f"the Flower run ended without writing {path}; see {cfg.output_dir / 'run.log'}")
    return json.loads(path.read_text())


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


def deployment_run_config(token: str, view: dict[str, Any], resume: bool) -> str:
    """The run config ``flwr run`` sends, as TOML. Flower hands it to every ClientApp too, so it carries
    only the settings clients read and the token of the server's own config
    (:mod:`fedgrpo.flower.run_config`): no ``data`` recipe, no path of the server's."""
    yaml_text = yaml.safe_dump(view, sort_keys=False)
    if TRIPLE in yaml_text:
        raise ConfigError(f"the config contains {TRIPLE} and cannot travel in a TOML run config")
    return (
        f'config = {TRIPLE}\n{yaml_text}{TRIPLE}\noverrides = ""\nresume = {str(resume).lower()}\n'
        f'{TOKEN_KEY} = "{token}"\n'
    )


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
    cfg = absolute_paths(cfg)
    check_output_dir(cfg, resume)
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    home = flwr_home(cfg, out / "flwr-home")
    run_config = out / "flower_run_config.toml"
    token, view, stored = save_server_config(cfg)
    try:
        run_config.write_text(deployment_run_config(token, view, resume))
        log.info("submitting to the SuperLink at %s", cfg.flower.superlink)
        submitted = time.time()
        started = _json_out(
            _flwr(home, "run", str(APP_DIR), "fedgrpo", "--run-config", str(run_config), "--format", "json"),
            "`flwr run`",
        )
        run_id = str(started["run-id"])
        log.info("Flower run %s started; streaming its log", run_id)
        _flwr(home, "log", run_id, "fedgrpo", "--stream", capture=False)
        listed = _json_out(
            _flwr(home, "list", "fedgrpo", "--run-id", run_id, "--format", "json"), "`flwr list`"
        )
    finally:
        stored.unlink(missing_ok=True)  # the ServerApp read it when it started
    runs = listed.get("runs") or [{}]
    status, details = runs[0].get("status"), runs[0].get("status-details")
    if status != "finished:completed":
        raise RunFailed(f"Flower run {run_id} ended as {status!r}: {details}")
    return run_results(cfg, since=submitted)
