"""The method switch: config validation, the registry, the central baseline's reward and upload count,
and the ``fed/`` numbers reaching TRL's trackers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedgrpo.algorithms import ALGORITHMS, REGISTRY, Entry
from fedgrpo.algorithms.central_grpo import GroundTruthReward, pooled_upload
from fedgrpo.config import METHODS, ConfigError, load_config
from fedgrpo.data import Example, write_labelled
from fedgrpo.run.metrics import MetricsCallback
from fedgrpo.simulation.data import build_data


def test_the_registry_is_the_configs_methods_and_every_entry_resolves() -> None:
    assert tuple(a.name for a in ALGORITHMS) == METHODS and ALGORITHMS[0].name == "fedgrpo"
    flower = importlib.util.find_spec("flwr") is not None  # the Flower runs need the flower extra
    for algorithm in ALGORITHMS:
        for transport in ("in_process", "flower-simulation", "flower-deployment"):
            entry = algorithm.entry(transport)
            if entry is not None and (flower or transport == "in_process"):
                assert callable(entry.load()), entry.target
    with pytest.raises(ValueError, match="is not 'package.module:function'"):
        Entry("fedgrpo.algorithms.zero_shot.run")


def test_the_config_allows_exactly_the_transports_the_registry_has(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").touch()
    (tmp_path / "h.jsonl").touch()
    files = [f"server.questions={tmp_path / 'q.jsonl'}", f"server.heldout={tmp_path / 'h.jsonl'}"]
    deployment = ["flower.insecure=true", "flower.num_supernodes=2", *files]
    extra = {"in_process": [], "flower-simulation": [], "flower-deployment": deployment}
    for name, algorithm in REGISTRY.items():
        for transport, over in extra.items():
            try:
                load_config("smoke", [f"method={name}", f"federation.transport={transport}", *over])
                allowed = True
            except ConfigError as err:
                assert f"method={name} runs" in str(err), err  # refused for the method, nothing else
                allowed = False
            assert allowed == (algorithm.entry(transport) is not None), (name, transport)


def test_listing_the_methods_loads_no_model_code() -> None:
    heavy = "('torch', 'transformers', 'trl', 'flwr')"
    code = f"import sys, fedgrpo.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_method_validates_and_an_unknown_one_names_the_field() -> None:
    for method in METHODS:
        assert load_config("smoke", [f"method={method}"]).method == method
    with pytest.raises(ConfigError, match=r"method: Input should be 'fedgrpo'"):
        load_config("smoke", ["method=fedavg"])


def test_each_baseline_runs_only_on_the_transports_it_has() -> None:
    with pytest.raises(ConfigError, match="method=zero-shot runs in process"):
        load_config("smoke", ["method=zero-shot", "federation.transport=flower-simulation"])
    with pytest.raises(ConfigError, match="method=central-grpo runs in process"):
        load_config("smoke", ["method=central-grpo", "federation.transport=flower-simulation"])
    deployment = ["federation.transport=flower-deployment", "flower.insecure=true", "flower.num_supernodes=2"]
    for method in ("fedpetuning", "dpsda-fl"):  # Flower's Simulation Engine, on the simulation's split
        cfg = load_config("smoke", [f"method={method}", "federation.transport=flower-simulation"])
        assert cfg.federation.transport == "flower-simulation"
        with pytest.raises(ConfigError, match=f"method={method} runs in process or on Flower's Simulation"):
            load_config("smoke", [f"method={method}", *deployment])


def _example(answer: str) -> Example:
    return Example("q1", "sums", "What is 2 + 3?", answer)


def test_ground_truth_reward_ranks_correct_answers_first_and_counts_the_rounds() -> None:
    reward = GroundTruthReward([_example("5")], num_generations=4, format_reward=0.1)
    completions = ["<answer>5</answer>", "<answer>6</answer>", "5", "nothing"]
    adv = reward(["p"] * 4, completions, qid=["q1"] * 4)
    # strict correctness plus the format reward: 1.1, 0.1, 0.0, 0.0; the advantages keep that order
    assert adv[0] > adv[1] > adv[2] == adv[3] and abs(sum(adv)) < 1e-9
    stats, groups = reward.drain()
    assert stats.summary()["fed/reward_mean"] == pytest.approx(1.2 / 4) and groups == []
    assert stats.rounds == 1 and stats.bytes_down == stats.bytes_up == 0
    same = reward(["p"] * 4, ["<answer>5</answer>"] * 4, qid=["q1"] * 4)
    assert same == [0.0] * 4 and reward.total.groups_zero_spread == 1  # no spread: no signal
    restored = GroundTruthReward([_example("5")], 4, 0.1)
    restored.load_state_dict(reward.state_dict())
    assert restored.total.to_json() == reward.total.to_json()


def test_the_pooled_upload_is_the_size_of_every_clients_labelled_file(tmp_path: Path) -> None:
    split = build_data(load_config("smoke"))
    stats = pooled_upload(split)
    for client, examples in split.clients.items():
        write_labelled(examples, tmp_path / f"{client}.jsonl")
        assert stats.bytes_up_per_client[client] == (tmp_path / f"{client}.jsonl").stat().st_size
    assert stats.bytes_up == sum(stats.bytes_up_per_client.values()) > 0 and stats.bytes_down == 0


def test_fed_numbers_reach_the_trackers_through_the_logs(tmp_path: Path) -> None:
    reward = GroundTruthReward([_example("5")], 2, 0.1)
    reward(["p"] * 2, ["<answer>5</answer>", "x"], qid=["q1"] * 2)
    logs = {"loss": 0.5, "rewards/ground_truth_advantage/mean": 0.0}
    callback = MetricsCallback(tmp_path / "metrics.jsonl", reward)
    callback.on_log(None, SimpleNamespace(global_step=1), None, logs)
    assert logs["fed/reward_mean"] == pytest.approx(0.55) and logs["fed/rounds"] == 1
    assert all(isinstance(v, int | float) for v in logs.values())  # scalars only: trackers take those
