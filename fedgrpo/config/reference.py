"""``docs/config.md``, generated from the config's pydantic models: every key with its type, default and
description, so that the reference cannot drift from the code (``tests/test_docs_reference.py``)."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedgrpo.config.experiment import FedGRPOConfig
from fedgrpo.config.grpo import GRPO_DEFAULTS, RESERVED_GRPO_KEYS


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation)).replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{value!r}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _is_section(field: Any) -> bool:
    """A field whose type is a model of its own: a nested section, not a key."""
    return inspect.isclass(field.annotation) and issubclass(field.annotation, BaseModel)


def _sections(model: type[BaseModel], prefix: str) -> list[tuple[str, type[BaseModel]]]:
    """``model`` and every nested section under it, in declaration order, with their dotted prefixes."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        if _is_section(field):
            out += _sections(field.annotation, f"{prefix}{name}.")
    return out


def _section_table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if _is_section(field):
            continue  # a section of its own
        description = _cell(field.description or "")
        rows.append(
            f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
        )
    return rows


def _grpo_table() -> list[str]:
    rows = ["| key | FedGRPO's default |", "|---|---|"]
    rows += [f"| `grpo.{k}` | `{v!r}` |" for k, v in GRPO_DEFAULTS.items()]
    reserved = ", ".join(f"`{k}` (use `{v}`)" for k, v in RESERVED_GRPO_KEYS.items())
    return [
        "Every key is a `trl.GRPOConfig` field, passed through and checked by TRL's own rules before any "
        "model loads. FedGRPO's defaults (sized for a CPU) are merged under yours; anything else is "
        "TRL's default. Set by FedGRPO, refused here: " + reserved + ".",
        "",
        *rows,
    ]


def config_reference() -> str:
    """The whole ``docs/config.md``."""
    out = [
        "# Config reference",
        "",
        "Generated from the pydantic models in `fedgrpo/config/` by `fedgrpo docs` (do not edit by hand; "
        "`tests/test_docs_reference.py` fails when it drifts). A run is a YAML file or a preset "
        "(`fedgrpo/presets/`) plus dotted `key=value` overrides; `fedgrpo show-config CONFIG` prints "
        "every value a run uses. Defaults here are the models' own; the presets change some of them.",
        "",
    ]
    for prefix, model in _sections(FedGRPOConfig, ""):
        title = prefix.rstrip(".")
        doc = inspect.getdoc(model) if model.__doc__ else ""
        out += [f"## `{title}`" if prefix else "## Top level", ""]
        if doc and prefix:
            out += [" ".join(doc.split("\n\n")[0].split()), ""]
        out += [*_section_table(model, prefix), ""]
        if not prefix:
            out += ["## `grpo`", "", *_grpo_table(), ""]
    return "\n".join(out)
