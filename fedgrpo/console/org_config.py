"""An organisation's console file: what it brings to a federation, in one small YAML file.

Example (paths are relative to the file's folder)::

    data: data.jsonl               # its labelled file (format: fedgrpo.data.files)
    superlink: 10.0.0.5:9093       # the SuperLink's address, from the server's operator
    ca: ca.crt                     # the server's CA certificate, from the server's operator
    key: supernode-key             # its private key (`fedgrpo org keys` makes the pair)
    model:                         # optional: without it, it scores only the questions it holds
      serve: HF-ID-OR-FOLDER       # started with `transformers serve`; or:
      # endpoint: http://127.0.0.1:8000/v1   and   name: MODEL-NAME   (a server it already runs,
      # or one this console starts and supervises with   command: [vllm, serve, MODEL, --port, "8000"])
    node_config:                   # further SuperNode settings, e.g. differential privacy
      privacy-epsilon: 1

The SuperNode's own node config (``data-file``, ``endpoint``, ``endpoint-model``, ``reply-log``) is
derived from this file, so those keys are refused under ``node_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedgrpo.config import ConfigError

__all__ = ["ModelSpec", "OrgConfig", "load_org_config"]

DERIVED = {"data-file", "endpoint", "endpoint-model", "reply-log", "model", "adapter"}


class ModelSpec(BaseModel):
    """The organisation's own model: one it serves here, or a server it already runs."""

    model_config = ConfigDict(extra="forbid")
    serve: str | None = Field(None, description="a folder or hub id, served with `transformers serve`")
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible server it runs")
    name: str | None = Field(None, description="the model name the server expects (default: serve)")
    key_env: str | None = Field(None, description="environment variable holding the endpoint's API key")
    command: list[str] | None = Field(
        None, description="with endpoint: the command that starts that server (vLLM, llama-server, ...)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    device: str = "cpu"
    wait_s: float = Field(600.0, gt=0, description="how long to wait for the model server to answer")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.serve is None) == (self.endpoint is None):
            raise ValueError("give exactly one of model.serve (a model to serve) and model.endpoint")
        if self.endpoint is not None and not self.name:
            raise ValueError("model.endpoint needs model.name: the model name that server expects")
        if self.command is not None and (self.endpoint is None or not self.command):
            raise ValueError("model.command needs model.endpoint (where that server answers) and a program")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("model.endpoint must start with http:// or https://")
        return self

    @property
    def url(self) -> str:
        return self.endpoint or f"http://{self.host}:{self.port}/v1"

    @property
    def served_name(self) -> str:
        return str(self.name or self.serve)


class OrgConfig(BaseModel):
    """One organisation's console file; paths are resolved against the file's folder."""

    model_config = ConfigDict(extra="forbid")
    data: Path
    superlink: str = Field(pattern=r"^[^\s:]+:\d+$")
    ca: Path | None = Field(None, description="the server's CA certificate; none: insecure (tests only)")
    key: Path = Path("supernode-key")
    name: str | None = Field(
        None, description="the name it claims; must be the one its key is registered under"
    )
    port: int = Field(9094, ge=1, le=65535, description="this SuperNode's local ClientApp port")
    state: Path = Field(Path("state"), description="its folder: logs, node config, transparency log")
    model: ModelSpec | None = None
    node_config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_derived_keys(self) -> Self:
        derived = sorted(DERIVED & set(self.node_config))
        if derived:
            raise ValueError(f"node_config {derived}: set by this file (data, model, state); remove them")
        return self

    def resolved(self, folder: Path) -> OrgConfig:
        """The config with every path absolute, relative ones taken from ``folder``."""
        paths = {k: (folder / getattr(self, k)).resolve() for k in ("data", "key", "state")}
        if self.ca is not None:
            paths["ca"] = (folder / self.ca).resolve()
        return self.model_copy(update=paths)

    @property
    def reply_log(self) -> Path:
        return self.state / "replies.jsonl"

    def supernode_config(self) -> dict[str, str | int | float | bool]:
        """The SuperNode's ``--node-config``: its data, its model endpoint, its log, its own settings."""
        out: dict[str, str | int | float | bool] = {
            "data-file": str(self.data),
            "reply-log": str(self.reply_log),
        }
        if self.name:
            out["name"] = self.name
        if self.model is not None:
            out.update({"endpoint": self.model.url, "endpoint-model": self.model.served_name})
            if self.model.key_env:
                out["endpoint-key-env"] = self.model.key_env
        return {**out, **self.node_config}


def load_org_config(path: str | Path) -> OrgConfig:
    """The organisation's file, checked, with absolute paths; ConfigError names what is wrong."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the organisation's file: {err}") from None
    try:
        cfg = OrgConfig.model_validate(data if data is not None else {})
    except ValidationError as err:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}:\n" + "\n".join(lines)) from None
    return cfg.resolved(path.resolve().parent)
