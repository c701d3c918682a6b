"""The CPU speed layer: the same numbers out, fewer operations in. Two entries, one per kind of model:

* :func:`speed_up_trainer_model`: a trainer's policy (the server's GRPO policy, a client expert's
  SFT or GRPO model). Its ``generate`` reads each distinct prompt once
  (:mod:`~fedgrpo.accel.generation`) and its loss forward reads each shared prompt once
  (:mod:`~fedgrpo.accel.shared_prefix`); both are installed on the model instance.
* :func:`speed_up_client_model`: a client's scoring model, once at load: its linear weights in fp16
  (:mod:`~fedgrpo.accel.fp16_weights`). Each scoring call then goes through
  :func:`fedgrpo.accel.generation.generate` (kept prompt starts, :mod:`~fedgrpo.accel.prompt_cache`;
  few-row linears, :mod:`~fedgrpo.accel.few_rows`; the adapter merged for the call).

Transformers release differences live in :mod:`~fedgrpo.accel.compat`; the one private TRL name
changed (the fused LM head's compaction on the CPU) in :mod:`~fedgrpo.accel.trl_patch`. The modules
are imported by the entries that use them: torch and transformers are a heavy, optional dependency.
"""

from __future__ import annotations

from typing import Any


def speed_up_trainer_model(model: Any, generation: bool = True) -> Any:
    """Install the shared-prefix loss forward and, unless ``generation`` is False (a client expert's
    local training leaves its ``generate`` as it is), the prompt-once generation; returns the model."""
    from fedgrpo.accel.generation import speed_up_generation
    from fedgrpo.accel.shared_prefix import share_prompt_prefixes

    if generation:
        speed_up_generation(model)
    return share_prompt_prefixes(model)


def speed_up_client_model(model: Any, weights: str) -> int:
    """Set a client model's load-time levers: ``weights="fp16"`` packs its linear weights in fp16 (in
    place, once for a base its clients share). Returns the number of layers packed."""
    if weights != "fp16":
        return 0
    from fedgrpo.accel.fp16_weights import pack_fp16_weights

    return pack_fp16_weights(model)
