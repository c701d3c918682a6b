"""A simulation with DP-SGD experts composes each expert's training privacy into its client's
per-example ledger, so the per-example epsilon includes it from the first release on."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgrpo.client.experts import ExpertRecipe, ensure_experts
from fedgrpo.client.private_training import training_privacy
from fedgrpo.config import load_config
from fedgrpo.simulation.clients import build_clients, expert_training_privacy, train_client_experts
from fedgrpo.simulation.data import build_data


def test_dp_sgd_experts_are_charged_to_every_example_of_their_client(tmp_path: Path) -> None:
    base = [
        "clients.model=tiny-random",
        "clients.expert.method=sft",
        "clients.expert.epochs=1",
        f"clients.expert.cache_dir={tmp_path}",
        "clients.privacy.enabled=true",
        "clients.privacy.epsilon=1.0",
    ]
    private = load_config(
        "smoke", [*base, "clients.expert.dp.enabled=true", "clients.expert.dp.target_epsilon=4"]
    )
    split = build_data(private)
    clients = build_clients(private, split)
    folders, _ = train_client_experts(private, split)
    costs = expert_training_privacy(folders)
    assert sorted(costs) == sorted(folders) == sorted(c.name for c in clients)
    for client in clients:
        cost = training_privacy(folders[client.name])
        assert cost is not None and costs[client.name] == cost
        report = client.privacy.report()
        assert report["training_privacy_composed"] is True
        # nothing released yet: every example's epsilon is the training's alone (about the target)
        assert report["per_example_epsilon_max"] == pytest.approx(cost.epsilon(report["delta"]), rel=0.02)
        assert report["per_example_epsilon_max"] == pytest.approx(4.0, rel=0.05)

    # a non-private expert beside them composes nothing
    recipe = ExpertRecipe.from_settings("tiny-random", load_config("smoke", base).clients.expert, 0)
    plain, _ = ensure_experts(recipe, {"plain": split.clients[clients[0].name]}, tmp_path / "plain")
    assert expert_training_privacy({**folders, **plain}) == costs
