"""No label crosses to the server: inspect everything the transport carries in a real training run."""

from __future__ import annotations

import json

from fedgrpo.config import load_config
from fedgrpo.data import Question
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.protocol import RewardRequest, decode
from fedgrpo.run.assemble import build_data
from fedgrpo.run.clients import build_clients
from fedgrpo.run.trl import make_trainer, train_dataset
from fedgrpo.selection import AllSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport


class Recording:
    """A client behind the in-process transport, keeping a copy of every byte crossing its boundary."""

    def __init__(self, client, down: list[bytes], up: list[bytes]) -> None:
        self.name, self._client, self._down, self._up = client.name, client, down, up

    def handle(self, payload: bytes) -> bytes:
        self._down.append(payload)
        reply = self._client.handle(payload)
        self._up.append(reply)
        return reply


def test_only_questions_and_candidates_go_down_and_only_scalars_come_up(tmp_path) -> None:
    cfg = load_config("smoke", ["grpo.max_steps=2"])
    split = build_data(cfg)
    assert not any(hasattr(q, "answer") or hasattr(q, "entry") for q in split.train_questions)
    assert all(isinstance(q, Question) for q in split.train_questions)
    dataset = train_dataset(split.train_questions, cfg.model.worked_example)
    assert set(dataset.column_names) == {"prompt", "qid", "question", "domain"}

    down: list[bytes] = []
    up: list[bytes] = []
    transport = InProcessTransport([Recording(c, down, up) for c in build_clients(cfg, split)])
    rewards = FederatedAdvantage(transport, AllSelector(), 2, cfg.num_generations)
    trainer = make_trainer(
        cfg, load_policy("tiny-random"), load_tokenizer("tiny-random"), dataset, rewards, tmp_path / "ckpt"
    )
    trainer.train()
    assert down and up

    server_texts = {q.question for q in split.train_questions}
    private = {ex.question: ex for examples in split.clients.values() for ex in examples}
    for payload in down:
        body = json.loads(payload)
        assert set(body) == {"v", "kind", "request_id", "client", "items"}
        assert isinstance(decode(payload), RewardRequest)
        for item in body["items"]:
            assert set(item) == {"qid", "question", "candidates"}
            assert item["question"] in server_texts  # nothing appended to the question
            ex = private[item["question"]]
            # the label is nowhere in the request except where the model itself wrote it
            others = json.dumps({k: v for k, v in body.items() if k != "items"})
            assert f"<answer>{ex.answer}</answer>" not in item["question"] + others
    for payload in up:
        body = json.loads(payload)
        assert set(body) == {"v", "kind", "request_id", "client", "items"}
        for item in body["items"]:
            assert set(item) == {"qid", "rewards", "method"}
            assert all(r is None or isinstance(r, float | int) for r in item["rewards"])
