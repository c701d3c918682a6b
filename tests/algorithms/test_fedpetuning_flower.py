"""fedpetuning's Flower pair, called as Flower calls it: the real ClientApp trains on its own partition,
the real FedAvg strategy (with our byte counts and reply checks) averages its replies. The whole
Simulation Engine run is in tests/e2e/test_fedpetuning_flower.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict  # noqa: E402

from fedgrpo.algorithms.fedpetuning.fedavg import weighted_average, wire_bytes  # noqa: E402
from fedgrpo.algorithms.fedpetuning.flower import AccountedFedAvg, make_client_app  # noqa: E402
from fedgrpo.algorithms.fedpetuning.train import RunBook, train_locally  # noqa: E402
from fedgrpo.simulation.data import build_data  # noqa: E402
from tests.algorithms.test_fedpetuning import small_config  # noqa: E402
from tests.helpers import delivered  # noqa: E402


@pytest.fixture()
def book(tmp_path: Path) -> RunBook:
    from flwr.supercore.task_identity import TaskIdentity

    # what a ServerApp process has set when it builds instruction messages
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    cfg = small_config(tmp_path / "run", "eval.before=false")
    cfg.output_dir.mkdir(parents=True)
    return RunBook(cfg, build_data(cfg), resume=False)


def instruction(book: RunBook, node: int) -> Message:
    """What Flower's FedAvg sends a node in round 1: the adapter and the round config."""
    arrays = ArrayRecord.from_torch_state_dict(book.global_state)
    config = ConfigRecord({"server-round": 1, "round-offset": 0})
    return delivered(RecordDict({"arrays": arrays, "config": config}), "train", f"m{node}", dst_node_id=node)


def reply(book: RunBook, node: int, arrays: dict[str, torch.Tensor], metrics: dict[str, float]) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord.from_torch_state_dict(arrays),
            "metrics": MetricRecord(metrics),
            "client": ConfigRecord({"name": f"node-{node}-client"}),
        }
    )
    return Message(content, reply_to=instruction(book, node))


def test_flowers_fedavg_averages_the_client_apps_and_drops_what_cannot_be_averaged(book: RunBook) -> None:
    cfg, split = book.cfg, build_data(book.cfg)
    app = make_client_app(cfg.to_yaml())
    good = [
        app(
            message=instruction(book, 10 + i),
            context=Context(
                run_id=1, node_id=10 + i, node_config={"partition-id": i}, state=RecordDict(), run_config={}
            ),
        )
        for i in range(3)
    ]
    assert not any(r.has_error() for r in good)
    adapters = [r.content["arrays"].to_torch_state_dict() for r in good]
    sizes = [len(split.clients[f"client-{i}"]) for i in range(3)]
    assert [r.content["metrics"]["num-examples"] for r in good] == sizes  # each trained on its own data

    # A virtual client trains exactly as an in-process one (same recipe, same seeds).
    alone, _ = train_locally(
        cfg, book.model, book.tokenizer, "client-1", split.clients["client-1"], book.global_state, 1
    )
    for key, value in alone.items():
        torch.testing.assert_close(adapters[1][key], value)

    template = adapters[0]
    nan = {**template, next(iter(template)): torch.full_like(next(iter(template.values())), float("nan"))}
    extra = {**template, "lm_head.lora_A.weight": torch.zeros(2, 2)}
    ok_metrics = {"num-examples": 5, "steps": 2}
    bad = [
        reply(book, 20, nan, ok_metrics),
        reply(book, 21, extra, ok_metrics),
        reply(book, 22, template, {"num-examples": 5}),  # Flower would stop the run on other metric keys
        reply(book, 23, template, {"num-examples": 0, "steps": 2}),  # Flower would divide by zero
        Message(Error(code=0, reason="ClientApp raised"), reply_to=instruction(book, 24)),
    ]
    strategy = AccountedFedAvg(book, 0, fraction_evaluate=0.0, min_train_nodes=1)
    averaged, _ = strategy.aggregate_train(1, [good[0], *bad[:2], good[1], *bad[2:], good[2]])
    assert averaged is not None
    expected = weighted_average(list(zip(adapters, sizes, strict=True)))
    for key, value in averaged.to_torch_state_dict().items():
        torch.testing.assert_close(value, expected[key])

    stats = strategy._stats
    assert dict(stats.rejected) == {"bad_adapter": 4, "client_failed": 1}
    adapter = wire_bytes(book.global_state)
    assert {f"client-{i}": adapter for i in range(3)}.items() <= dict(stats.bytes_up_per_client).items()

    # The round ends in evaluate_fn: the run book takes Flower's average as the server's adapter.
    strategy.end_round(1, averaged)
    for key, value in book.global_state.items():
        torch.testing.assert_close(value, expected[key])
    assert (book.checkpoints / "checkpoint-1" / "COMPLETE").exists()


def test_a_round_where_every_reply_is_bad_keeps_the_servers_adapter(book: RunBook) -> None:
    before = {k: v.clone() for k, v in book.global_state.items()}
    strategy = AccountedFedAvg(book, 0, fraction_evaluate=0.0, min_train_nodes=1)
    failed = Message(Error(code=0, reason="ClientApp raised"), reply_to=instruction(book, 30))
    averaged, _ = strategy.aggregate_train(1, [failed])
    assert averaged is None
    strategy.end_round(1, ArrayRecord.from_torch_state_dict(before))
    assert all(torch.equal(book.global_state[k], v) for k, v in before.items())
