"""fedpetuning on Flower's Simulation Engine (Ray, real virtual clients, Flower's own FedAvg strategy)
against the same config in process: the same adapter, the same bytes. One to two minutes on 2 shared cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

from tests.algorithms.test_fedpetuning import SMALL  # noqa: E402


def fedpetuning(out: Path, *overrides: str) -> dict:
    """``fedgrpo run smoke method=fedpetuning ...`` as a user types it, in a fresh process."""
    command = [sys.executable, "-m", "fedgrpo.cli", "run", "smoke", "method=fedpetuning", *SMALL]
    proc = subprocess.run(
        [*command, f"run.output_dir={out}", *overrides], capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_flowers_fedavg_on_the_simulation_engine_matches_the_in_process_run(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    local = fedpetuning(tmp_path / "local")
    flower = fedpetuning(tmp_path / "flower", "federation.transport=flower-simulation", "flower.ray_cpus=2")
    assert flower["transport"]["strategy"] == "flwr.serverapp.strategy.FedAvg"
    keys = (
        "fed/rounds",
        "fed/bytes_down",
        "fed/bytes_up",
        "fed/bytes_up_per_client",
        "adapter_bytes",
        "per_round",
    )
    assert {k: flower["communication"][k] for k in keys} == {k: local["communication"][k] for k in keys}
    assert flower["communication"]["fed/bytes_up"] == 2 * 3 * local["communication"]["adapter_bytes"]
    a = load_file(str(tmp_path / "local" / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "flower" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # same seeds, same local training; only the order of the weighted sum may differ
        assert (a[key] - b[key]).abs().max() < 1e-6, key
    assert flower["after"] == local["after"]
