"""Every transformers and PEFT release difference the speed layer meets, in one place.

transformers 5.24 renamed a model forward's KV cache argument and output from ``past_key_values`` to
``cache`` (the old name warns there and goes away in 5.40); ``logits_to_keep`` is not taken by every
model's forward; a PEFT wrapper's own forward takes ``**kwargs``, so signatures are read on the
causal LM beneath it.
"""

from __future__ import annotations

import inspect
from typing import Any


def base_model(model: Any) -> Any:
    """The causal LM under a PEFT wrapper (whose own forward takes ``**kwargs``), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_argument(forward: Any) -> str:
    """The name under which ``forward`` takes a KV cache: ``cache`` in the transformers releases that
    renamed it (5.24 warns that ``past_key_values`` goes away from model forwards in 5.40), else
    ``past_key_values``."""
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def cache_name(model: Any) -> str:
    """The keyword under which this transformers release's ``generate`` takes a cache: ``cache`` where
    the model forwards take it (5.24 on; ``past_key_values`` warns there), else ``past_key_values``."""
    return cache_argument(base_model(model).forward)


def output_cache(out: Any) -> Any:
    """A model output's KV cache under its release's name: ``cache`` from transformers 5.24 on (reading
    ``past_key_values`` there warns), else ``past_key_values``; None when it kept none."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def drop_output_cache(out: Any) -> None:
    """Clear a model output's KV cache field, under whichever name its release uses."""
    setattr(out, "cache" if "cache" in out else "past_key_values", None)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward can project only the last positions (``logits_to_keep``)."""
    try:
        return "logits_to_keep" in inspect.signature(base_model(model).forward).parameters
    except (TypeError, ValueError):
        return False
