"""TRL's GRPO settings under ``grpo``: FedGRPO's defaults, the keys FedGRPO owns, and early checks.

Every ``grpo`` key is a ``trl.GRPOConfig`` field, checked here for its kind and range so that a bad
value fails with the config, naming the field, before any model loads; the config then builds the
real ``GRPOConfig`` once to run TRL's own checks too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

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


@functools.cache
def grpo_config_fields() -> dict[str, Any]:
    """trl.GRPOConfig's fields and their defaults (MISSING where there is none)."""
    from trl import GRPOConfig

    return {
        f.name: f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        for f in dataclasses.fields(GRPOConfig)
    }


def _checked(key: str, value: Any, default: Any) -> Any:
    """A value of the kind GRPOConfig's default has (bool, int or float); others pass to TRL.

    A float written like ``2e-4`` reaches us as a string (YAML 1.1 wants ``2.0e-4``): it is read as
    the number it spells rather than refused."""
    if value is None or default is None or default is dataclasses.MISSING:
        return value
    if isinstance(default, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        return value
    if not ok:
        raise ValueError(f"grpo.{key} must be a {type(default).__name__}, got {value!r}")
    return value


def check_grpo_settings(value: dict[str, Any], trl_fields: bool = True) -> dict[str, Any]:
    """The user's ``grpo`` settings over FedGRPO's defaults, each key known and in range.

    ``trl_fields=False`` skips the check against TRL's fields (which imports TRL, torch and
    transformers): for a client process, which trains nothing; the server checks them."""
    fields = grpo_config_fields() if trl_fields else {}
    value = dict(value)
    for key, given in value.items():
        if key in RESERVED_GRPO_KEYS:
            raise ValueError(f"grpo.{key} is set by FedGRPO; use {RESERVED_GRPO_KEYS[key]} instead")
        if not trl_fields:
            continue
        if key not in fields:
            close = [k for k in fields if key.split("_")[0] in k][:8]
            raise ValueError(f"grpo.{key} is not a trl.GRPOConfig field (similar: {close})")
        value[key] = _checked(key, given, fields[key])
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
        raise ValueError(f"grpo.max_steps must be >= 1 (or -1: train by epochs), got {value['max_steps']!r}")
    return value
