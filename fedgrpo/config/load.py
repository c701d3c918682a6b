"""Reading a config: a preset or YAML file (or YAML text), dotted ``key=value`` overrides, validation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedgrpo.config.experiment import FedGRPOConfig

PRESETS = ("smoke", "default", "graph-smoke")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and what is allowed."""


def read_source(source: str | Path) -> dict[str, Any]:
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
    if str(source) in PRESETS and "base" in data:  # a preset written as its differences from another
        return _merged(read_source(data.pop("base")), data)
    return data


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values in, section by section."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (so 3, true, [a, b] work)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value, e.g. grpo.max_steps=5")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: cannot parse value: {err}") from err
    set_dotted(data, key, value)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for the key ``a.b.c``, making sections as needed."""
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {key!r} has an empty key part")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(
    source: str | Path, overrides: list[str] | tuple[str, ...] = (), *, trl_checks: bool = True
) -> FedGRPOConfig:
    """Load a preset or YAML file, apply overrides, validate. Raises ConfigError with readable text.

    ``trl_checks=False`` skips checking ``grpo`` against TRL (for a client process, which trains
    nothing and need not import TRL)."""
    return config_from_mapping(read_source(source), overrides, trl_checks=trl_checks)


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
