"""``bench/private_experts.py`` (docs/trust.md): a DP-SGD recipe given as overrides is the one trained
and measured (on tiny-random, so it runs in seconds rather than the bench's minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgrpo.client.private_training import training_privacy
from fedgrpo.config import load_config
from fedgrpo.simulation.data import build_data
from tests.helpers import load_script


@pytest.mark.slow  # trains one DP-SGD expert and answers 33 questions with it (100 s on 2 loaded cores)
def test_the_bench_trains_the_recipe_it_is_given_and_measures_it(tmp_path: Path) -> None:
    bench = load_script("bench/private_experts.py")
    split = build_data(load_config("default"))
    heldout = [ex for examples in split.heldout.values() for ex in examples[:1]]
    recipe = [
        "clients.model=tiny-random",
        f"clients.expert.cache_dir={tmp_path}",
        "clients.expert.dp.enabled=true",
        "clients.expert.dp.target_epsilon=4.0",
        "clients.expert.lora_r=1",
        "clients.expert.dp.lora_last_layers=1",
        "clients.expert.batch_size=64",
    ]
    (row,) = bench.measure(recipe, split, ["client-0"], heldout)
    assert row["client"] == "client-0" and float(row["epsilon"]) == pytest.approx(4.0, abs=0.01)
    assert 0 <= row["aux"] <= 1 and 0 <= row["heldout"] <= 1
    (folder,) = [p for p in tmp_path.iterdir() if (p / "adapter").is_dir()]
    privacy = training_privacy(folder)
    assert privacy is not None and privacy.sample_rate == 1.0 and privacy.steps == 2  # full batch, 2 epochs
