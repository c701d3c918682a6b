"""One typed, validated configuration for a FedGRPO run.

A run is described by a YAML file (or a built-in preset name) plus ``key=value`` overrides with dotted
keys, e.g. ``fedgrpo run smoke grpo.max_steps=3 federation.selector=all``. Everything is checked
before any model loads: unknown keys, impossible values and missing paths fail with the field name
and the allowed values. TRL's GRPO settings pass through under ``grpo`` and are checked against
``trl.GRPOConfig``'s own fields.
"""

from fedgrpo.config.baselines import DpsdaSettings, FedPETuningSettings
from fedgrpo.config.clients import AdversaryBehaviour, ClientPrivacy, ClientSettings, ExpertTraining
from fedgrpo.config.experiment import METHODS, FedGRPOConfig
from fedgrpo.config.grpo import GRPO_DEFAULTS, RESERVED_GRPO_KEYS, grpo_config_fields
from fedgrpo.config.load import (
    PRESETS,
    ConfigError,
    apply_override,
    config_from_mapping,
    load_config,
    load_config_text,
    read_source,
    set_dotted,
)
from fedgrpo.config.sections import (
    EMBEDDED_MODELS,
    CanarySettings,
    DataSettings,
    EvalSettings,
    FederationSettings,
    FlowerSettings,
    LoraSettings,
    ModelSettings,
    RunSettings,
    ServerFiles,
)

__all__ = [
    "EMBEDDED_MODELS",
    "GRPO_DEFAULTS",
    "METHODS",
    "PRESETS",
    "RESERVED_GRPO_KEYS",
    "AdversaryBehaviour",
    "CanarySettings",
    "ClientPrivacy",
    "ClientSettings",
    "ConfigError",
    "DataSettings",
    "DpsdaSettings",
    "EvalSettings",
    "ExpertTraining",
    "FedGRPOConfig",
    "FederationSettings",
    "FedPETuningSettings",
    "FlowerSettings",
    "LoraSettings",
    "ModelSettings",
    "RunSettings",
    "ServerFiles",
    "apply_override",
    "config_from_mapping",
    "grpo_config_fields",
    "load_config",
    "load_config_text",
    "read_source",
    "set_dotted",
]
