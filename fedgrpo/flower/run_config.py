"""What a deployment's Flower run config carries, and where the server's own config waits for it.

Flower hands the run config to the ServerApp and to every organisation's ClientApp alike. So it
carries only what a client uses (:func:`~fedgrpo.flower.client_app.client_view`: sampling settings,
seed, message limits) and a random token: none of the server's paths (its run folder, its files, its
CA certificate, its model folder) and no ``data`` recipe. The whole config stays on the server's
machine, in ``$FEDGRPO_HOME/deployments/<token>.yaml`` (default ``~/.fedgrpo``, mode 0600), written by
``fedgrpo run`` and read by the ServerApp, which the SuperLink starts on that machine.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import yaml

from fedgrpo.config import ConfigError, FedGRPOConfig, config_from_mapping
from fedgrpo.flower.client_app import client_view
from fedgrpo.storage.atomic import write_text_atomic

__all__ = ["TOKEN_KEY", "load_server_config", "save_server_config", "server_store", "travelling"]

TOKEN_KEY = "server-config"  # the run config's key for the token
_TOKEN = re.compile(r"[0-9a-f]{32}")


def server_store() -> Path:
    """The server machine's folder of submitted configs: ``$FEDGRPO_HOME/deployments``."""
    return Path(os.environ.get("FEDGRPO_HOME") or "~/.fedgrpo").expanduser() / "deployments"


def travelling(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a deployment's config that travels to organisations: what their clients read."""
    view = client_view(data)
    view["federation"] = {"transport": "flower-deployment", **view["federation"]}
    return view


def save_server_config(cfg: FedGRPOConfig) -> tuple[str, dict[str, Any], Path]:
    """``(token, travelling config, stored file)``: the whole config (without ``data``) is stored
    privately on this machine under a fresh random token; only the token and the travelling part
    go into the run config."""
    data = cfg.model_dump(mode="json")
    data.pop("data")
    token = secrets.token_hex(16)
    path = server_store() / f"{token}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False), private=True)
    return token, travelling(data), path


def load_server_config(token: str, config_text: str, overrides: list[str]) -> FedGRPOConfig:
    """The ServerApp's whole config for ``token``, fully checked; refused unless the run config's
    travelling part is the one derived from it (a stale or foreign token)."""
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"run config {TOKEN_KEY} is not a token `fedgrpo run` makes")
    path = server_store() / f"{token}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no server config {path}: the ServerApp must run on the machine, and as the user (or with "
            "the FEDGRPO_HOME), of the `fedgrpo run` that submitted it"
        )
    data = yaml.safe_load(path.read_text())
    if travelling(data) != yaml.safe_load(config_text):
        raise ConfigError(f"the run config does not match the server config {path}")
    return config_from_mapping(data, overrides)
