"""No label crosses to the server: inspect everything the transport carries in a real training run."""

from __future__ import annotations

import json

from fedgrpo.config import load_config
from fedgrpo.data import Question
from fedgrpo.federation import FederatedRewards
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.selection import AllSelector
from fedgrpo.trainer import build_clients, build_data, make_trainer, train_dataset
from fedgrpo.transport import InProcessTransport, RewardRequest, decode


class RecordingTransport(InProcessTransport):
    """The in-process transport, keeping a copy of every byte it carries."""

    def __init__(self, clients) -> None:
        super().__init__(clients)
        self.down: list[bytes] = []
        self.up: list[bytes] = []

    def exchange(self, requests):
        self.down += list(requests.values())
        out = super().exchange(requests)
        self.up += [d.reply for d in out.values() if d.reply is not None]
        return out


def test_only_questions_and_candidates_go_down_and_only_scalars_come_up(tmp_path) -> None:
    cfg = load_config("smoke", ["grpo.max_steps=2"])
    split = build_data(cfg)
    assert not any(hasattr(q, "answer") or hasattr(q, "entry") for q in split.train_questions)
    assert all(isinstance(q, Question) for q in split.train_questions)
    dataset = train_dataset(split.train_questions, cfg.model.worked_example)
    assert set(dataset.column_names) == {"prompt", "qid", "question", "domain"}

    transport = RecordingTransport(build_clients(cfg, split))
    rewards = FederatedRewards(transport, AllSelector(), 2, cfg.num_generations)
    trainer = make_trainer(
        cfg, load_policy("tiny-random"), load_tokenizer("tiny-random"), dataset, rewards, tmp_path / "ckpt"
    )
    trainer.train()
    assert transport.down and transport.up

    server_texts = {q.question for q in split.train_questions}
    private = {ex.question: ex for examples in split.clients.values() for ex in examples}
    for payload in transport.down:
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
    for payload in transport.up:
        body = json.loads(payload)
        assert set(body) == {"v", "kind", "request_id", "client", "items"}
        for item in body["items"]:
            assert set(item) == {"qid", "rewards", "method"}
            assert all(r is None or isinstance(r, float | int) for r in item["rewards"])
