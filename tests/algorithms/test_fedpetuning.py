"""The fedpetuning baseline: real TRL local training of real PEFT adapters on tiny-random, FedAvg checked
against Flower's own aggregation, bytes against Flower's own ArrayRecord, and a whole 2-round run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fedgrpo.algorithms.fedpetuning import train as fedpetuning
from fedgrpo.algorithms.fedpetuning.fedavg import (
    _npy_bytes,
    to_wire,
    update_problem,
    weighted_average,
    wire_bytes,
)
from fedgrpo.algorithms.fedpetuning.train import (
    ADAPTER_FILE,
    adapter_state,
    policy_with_adapter,
    sample_clients,
    train_locally,
)
from fedgrpo.config import ConfigError, FedGRPOConfig, load_config
from fedgrpo.models.loading import load_tokenizer
from fedgrpo.run.curve import CURVE_FILE, read_curve
from fedgrpo.run.outcomes import load_outcomes
from fedgrpo.simulation.data import build_data
from fedgrpo.storage.run_folder import RunExists
from tests.helpers import assert_outcomes_match

SMALL = [
    "fedpetuning.rounds=2",
    "fedpetuning.local_steps=2",
    "fedpetuning.batch_size=4",
    "fedpetuning.learning_rate=0.01",
    "model.lora.r=4",
    "model.lora.alpha=8",
    "eval.max_per_domain=2",
    "eval.max_new_tokens=4",
    "run.threads=1",
]


def small_config(out: Path, *overrides: str) -> FedGRPOConfig:
    return load_config("smoke", [*SMALL, f"run.output_dir={out}", *overrides])


def client_updates(n: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    gen = torch.Generator().manual_seed(0)
    shapes = {"model.layers.0.q_proj.lora_A.weight": (4, 8), "model.layers.0.q_proj.lora_B.weight": (8, 4)}
    return [
        ({k: torch.randn(s, generator=gen) for k, s in shapes.items()}, float(w)) for w in [7, 19, 10, 3][:n]
    ]


def test_in_process_fedavg_is_flowers_fedavg_on_the_same_updates() -> None:
    pytest.importorskip("flwr")
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    updates = client_updates(3)
    replies = [
        RecordDict(
            {"arrays": ArrayRecord.from_torch_state_dict(s), "metrics": MetricRecord({"num-examples": w})}
        )
        for s, w in updates
    ]
    flower = aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict()
    ours = weighted_average(updates)
    assert list(ours) == list(flower)
    for key in ours:
        torch.testing.assert_close(ours[key], flower[key], rtol=0, atol=1e-7)
    # and both are the example-weighted mean
    total = sum(w for _, w in updates)
    for key in ours:
        by_hand = sum(s[key] * w for s, w in updates) / total
        torch.testing.assert_close(ours[key], by_hand)


def test_fedavg_refuses_updates_it_cannot_average() -> None:
    (a, _), (b, _) = client_updates(2)
    with pytest.raises(ValueError, match="at least one"):
        weighted_average([])
    with pytest.raises(ValueError, match="different adapter tensors"):
        weighted_average([(a, 1.0), ({"other": b["model.layers.0.q_proj.lora_A.weight"]}, 1.0)])
    with pytest.raises(ValueError, match="positive"):
        weighted_average([(a, 0.0), (b, 0.0)])


def test_bytes_are_flowers_arrayrecord_count_of_float32_tensors() -> None:
    pytest.importorskip("flwr")
    from flwr.app import ArrayRecord

    state = {k: v.to(torch.bfloat16) for k, v in client_updates(1)[0][0].items()}
    counted = wire_bytes(state)
    assert counted == ArrayRecord.from_torch_state_dict(to_wire(state)).count_bytes()
    # float32 on the wire: 4 bytes per value, plus each tensor's .npy header and its key
    values = sum(v.numel() for v in state.values())
    assert 4 * values < counted < 4 * values + 200 * len(state)
    # without Flower the same .npy serialisation is measured: the same number
    assert counted == sum(_npy_bytes(v.numpy()) + len(k) for k, v in to_wire(state).items())


def test_clients_per_round_is_sized_like_flowers_fedavg_and_seeded_per_round() -> None:
    names = [f"client-{i}" for i in range(5)]
    assert sample_clients(names, 1.0, 0, 1) == names
    assert len(sample_clients(names, 0.5, 0, 1)) == 2  # int(5 * 0.5)
    assert len(sample_clients(names, 0.1, 0, 1)) == 1  # never fewer than one
    draws = [tuple(sample_clients(names, 0.4, 0, r)) for r in range(1, 9)]
    assert draws == [tuple(sample_clients(names, 0.4, 0, r)) for r in range(1, 9)]  # resume draws the same
    assert len(set(draws)) > 1
    assert all(list(d) == sorted(d) for d in draws)  # in client order: the averaging order


def test_local_training_moves_only_the_adapter(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "run")
    split = build_data(cfg)
    model = policy_with_adapter(cfg)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    base = {k: v.clone() for k, v in model.named_parameters() if "lora_" not in k}
    start = adapter_state(model)
    client, examples = next(iter(split.clients.items()))
    update, summary = train_locally(cfg, model, tokenizer, client, examples, start, 1)
    assert summary["steps"] == 2
    assert set(update) == set(start) and all("lora_" in k for k in update)
    assert any(not torch.equal(update[k], start[k]) for k in update)  # the adapter learned
    after = dict(model.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base.items())  # the base did not move


def test_grpo_variant_trains_on_the_clients_own_answer_check(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "run", "fedpetuning.method=grpo", "fedpetuning.local_steps=1")
    split = build_data(cfg)
    model = policy_with_adapter(cfg)
    client, examples = next(iter(split.clients.items()))
    update, summary = train_locally(
        cfg, model, load_tokenizer(cfg.model.name_or_path), client, examples, adapter_state(model), 1
    )
    assert summary["steps"] == 1
    assert summary["first_reward"] == 0.0  # the reward function ran (tiny-random never tags an answer)
    assert set(update) == set(adapter_state(model))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("fedpetuning.rounds=0", "fedpetuning.rounds"),
        ("fedpetuning.clients_per_round=0", "fedpetuning.clients_per_round"),
        ("fedpetuning.clients_per_round=1.5", "fedpetuning.clients_per_round"),
        ("fedpetuning.method=dpo", "fedpetuning.method"),
        ("fedpetuning.learning_rate=0", "fedpetuning.learning_rate"),
        ("fedpetuning.local_epochs=2", "fedpetuning.local_epochs"),
    ],
)
def test_bad_fedpetuning_settings_fail_naming_the_field(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config("smoke", [override])


def test_grpo_batches_must_hold_whole_groups() -> None:
    with pytest.raises(ConfigError, match=r"fedpetuning.batch_size \(6\).*fedpetuning.num_generations \(4\)"):
        load_config("smoke", ["fedpetuning.method=grpo", "fedpetuning.batch_size=6"])


def test_a_deployment_is_refused_before_anything_loads(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read")
    files = {k: tmp_path / f"{k}.jsonl" for k in ("questions", "heldout")}
    for f in files.values():
        f.write_text("")
    cfg = small_config(
        tmp_path / "run",
        "federation.transport=flower-deployment",
        "flower.num_supernodes=3",
        f"flower.root_certificates={ca}",
        *(f"server.{k}={v}" for k, v in files.items()),
    )
    with pytest.raises(ConfigError, match="seeded split of a simulation"):
        fedpetuning.run(cfg)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory) -> tuple[FedGRPOConfig, dict]:
    cfg = small_config(tmp_path_factory.mktemp("fedpet") / "run", "eval.every_steps=1")  # a curve per round
    return cfg, fedpetuning.run(cfg)


def test_a_run_writes_fedgrpos_results_with_both_direction_bytes(two_rounds) -> None:
    cfg, results = two_rounds
    out = cfg.output_dir
    assert json.loads((out / "results.json").read_text()) == results
    assert {"name", "steps", "train_seconds", "seconds_per_step", "before", "after", "communication"} <= set(
        results
    )
    assert results["steps"] == 2 and results["client_steps"] == 2 * 3 * 2  # rounds x clients x local steps
    assert_outcomes_match(out, results)  # each question's outcome, before and after
    domains = set(cfg.data.domains)
    for when in ("before", "after"):
        assert set(results[when]) == domains
        assert all(
            {"accuracy", "ci_low", "ci_high", "answer_accuracy"} <= set(d) for d in results[when].values()
        )

    comm, clients = results["communication"], 3
    model = policy_with_adapter(cfg)
    adapter = wire_bytes(adapter_state(model))  # measured again, independently of the run
    assert comm["adapter_bytes"] == adapter
    assert comm["fed/rounds"] == 2
    assert comm["fed/bytes_down"] == comm["fed/bytes_up"] == 2 * clients * adapter
    assert comm["per_round"] == [
        {"round": r, "bytes_down": clients * adapter, "bytes_up": clients * adapter} for r in (1, 2)
    ]
    assert comm["fed/bytes_down_per_client"] == {f"client-{i}": 2 * adapter for i in range(clients)}

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    (point,) = read_curve(out / CURVE_FILE)  # round 1; round 2 is "after"
    assert point["step"] == 1 and set(point["accuracy"]) == domains
    assert load_outcomes(out, "step-1") is not None and results["train_seconds"] == round(
        sum(r["seconds"] for r in rows), 1
    )  # the curve's evaluation is not training time
    assert all(r["fed/bytes_up"] == clients * adapter for r in rows)
    assert all(s["final_loss"] is not None for r in rows for s in r["local"].values())


def test_the_averaged_adapter_is_the_example_weighted_mean_of_the_clients(two_rounds) -> None:
    """Round 2 again, by hand: each client's local training from the round-1 adapter (same seeds),
    then the weighted mean; the run's round-2 adapter must be exactly that."""
    from safetensors.torch import load_file

    cfg, _ = two_rounds
    checkpoints = cfg.output_dir / "checkpoints"
    after_one = load_file(str(checkpoints / "checkpoint-1" / ADAPTER_FILE))
    after_two = load_file(str(checkpoints / "checkpoint-2" / ADAPTER_FILE))
    split = build_data(cfg)
    model = policy_with_adapter(cfg)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    updates = [
        (train_locally(cfg, model, tokenizer, c, ex, after_one, 2)[0], len(ex))
        for c, ex in split.clients.items()
    ]
    total = sum(n for _, n in updates)
    assert set(after_two) == set(after_one)
    for key, value in after_two.items():
        torch.testing.assert_close(value, sum(u[key] * n for u, n in updates) / total)
    assert any(not torch.equal(after_two[k], after_one[k]) for k in after_two)


def test_a_second_run_into_the_folder_is_refused_and_resume_continues(two_rounds, tmp_path: Path) -> None:
    cfg, first = two_rounds
    with pytest.raises(RunExists):
        fedpetuning.run(cfg)
    copy = tmp_path / "run"  # resume a copy: the other tests read the original's checkpoints
    shutil.copytree(cfg.output_dir, copy)
    more = small_config(copy, "fedpetuning.rounds=3")
    results = fedpetuning.run(more, resume=True)
    adapter = first["communication"]["adapter_bytes"]
    assert results["steps"] == 3
    assert results["communication"]["fed/bytes_down"] == 3 * 3 * adapter
    assert [r["round"] for r in results["communication"]["per_round"]] == [1, 2, 3]
    assert results["before"] == first["before"]  # read back, not evaluated again
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_an_adapter_that_cannot_be_averaged_is_named_and_dropped() -> None:
    (ref, _), (other, _) = client_updates(2)
    assert update_problem(other, ref) is None
    nan = {**other, "model.layers.0.q_proj.lora_B.weight": torch.full((8, 4), float("nan"))}
    assert "non-finite" in update_problem(nan, ref)
    wide = {**other, "model.layers.0.q_proj.lora_A.weight": torch.zeros(4, 9)}
    assert "shape (4, 9), expected (4, 8)" in update_problem(wide, ref)
    fewer = {"model.layers.0.q_proj.lora_A.weight": other["model.layers.0.q_proj.lora_A.weight"]}
    assert "missing ['model.layers.0.q_proj.lora_B.weight']" in update_problem(fewer, ref)
