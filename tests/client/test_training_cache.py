"""A DP-SGD expert's training privacy is composed once per organisation, not once per ClientApp
process: the epsilons composed with it are cached in the organisation's privacy state, keyed by the
training's values, and a changed expert replaces the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.client import Client
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease
from fedgrpo.client.private_training import PRIVACY_FILE, TrainingPrivacy
from fedgrpo.config import load_config
from fedgrpo.data import Example
from fedgrpo.flower.client_app import node_privacy
from fedgrpo.protocol import RewardItem, RewardRequest, encode

EXAMPLES = [Example(f"q{i}", "sums", f"What is {i} + 2?", str(i + 2)) for i in range(4)]


def _ask(client: Client, answers: list[str], rid: str) -> None:
    """One message: every example asked once, with the given candidate answers."""
    items = [
        RewardItem(str(k), ex.question, [f"<answer>{a}</answer>" for a in answers])
        for k, ex in enumerate(EXAMPLES)
    ]
    client.handle(encode(RewardRequest(rid, "org", items)))


class Counted:
    """The real training privacy, counting how often its PLD is built (what the cache saves)."""

    def __init__(self, training: TrainingPrivacy) -> None:
        self.training, self.built = training, 0

    def pld(self, value_discretization_interval: float) -> Any:
        self.built += 1
        return self.training.pld(value_discretization_interval)

    def values(self) -> dict[str, Any]:
        return self.training.values()


def test_a_second_process_reads_the_composed_training_privacy_instead_of_composing_it(tmp_path: Path) -> None:
    state = tmp_path / "org.privacy.json"
    training = TrainingPrivacy(noise_multiplier=1.0, sample_rate=0.2, steps=10)
    reports = []
    for process, answers in enumerate((["2", "3"], ["2", "3"])):  # two ClientApp processes
        counted = Counted(training)
        release = PrivateRelease(PrivacyPolicy(1.0, 12.0), seed=process, state_path=state, training=counted)
        _ask(Client("org", EXAMPLES, privacy=release), answers, f"r{process}")
        reports.append((counted.built, release.report()))
    (first_built, first), (second_built, second) = reports
    assert first_built == 1 and second_built == 0  # the second process built no PLD at all
    assert second == first and first["training_privacy_composed"] is True
    cached = json.loads(state.read_text())["training_epsilons"]
    assert cached["key"] == {
        "noise_multiplier": 1.0,
        "sample_rate": 0.2,
        "steps": 10,
        "delta": 1e-5,
        "grid": 1e-3,
    }
    assert cached["epsilons"]["rr:1.0=2"] == pytest.approx(first["per_example_epsilon_max"])
    assert max(cached["epsilons"].values()) >= first["per_example_epsilon_max"]


def test_a_changed_adapter_replaces_the_cached_entry(tmp_path: Path) -> None:
    cfg, data, expert = load_config("smoke"), tmp_path / "org.jsonl", tmp_path / "expert"
    (expert / "adapter").mkdir(parents=True)
    node = {"privacy-epsilon": "1", "privacy-budget-epsilon": "none", "adapter": str(expert)}
    entries = []
    for steps in (10, 10, 40):  # two messages with one expert, then a retrained, longer one
        (expert / PRIVACY_FILE).write_text(
            json.dumps({"noise_multiplier": 1.0, "sample_rate": 0.2, "steps": steps})
        )
        release = node_privacy(cfg, node, data)
        assert release is not None
        _ask(Client("org", EXAMPLES, privacy=release), ["2"], f"r{len(entries)}")
        cached = json.loads(release.state_path.read_text())["training_epsilons"]
        entries.append((cached, release.report()["per_example_epsilon_max"]))
    (same, eps_same), (again, eps_again), (changed, eps_changed) = entries
    assert again == same and eps_again == eps_same
    assert changed["key"]["steps"] == 40 and same["key"]["steps"] == 10
    assert set(changed["epsilons"]) == set(same["epsilons"])  # the old epsilons are gone, recomposed
    assert changed["epsilons"]["rr:1.0=1"] > same["epsilons"]["rr:1.0=1"]
    assert eps_changed > eps_same
