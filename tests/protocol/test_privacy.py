"""Nothing crosses that the protocol does not need: every byte both ways, in a real training run.

Down: per item the question text and the policy's candidates (items are keyed by position; no key
is sent); no label, no domain, no question id (which hashes the domain), no client name. Up: a byte per
reward (correctness only), per reply the method counts and the items' lengths; no per-item method
(which would say which questions a client holds), no name, and no string but the request id.
Compressed bodies are inspected inflated and decoded, as well as raw.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch

from fedgrpo.client import Client
from fedgrpo.config import load_config
from fedgrpo.data import Question, generate, make_qid
from fedgrpo.models.loading import load_policy, load_tokenizer
from fedgrpo.protocol import METHODS, CompetenceRequest, ErrorReply, RewardReply, RewardRequest, decode
from fedgrpo.run.trl import make_trainer, train_dataset
from fedgrpo.selection import AllSelector, ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.server import FederatedAdvantage, build_confidence_graph
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport
from tests import wire

RANDOM_ID = re.compile("[0-9a-f]{8}")  # what protocol.new_request_id makes: 32 random bits, nothing else


class Recording:
    """A client behind the in-process transport, keeping a copy of every byte crossing its boundary."""

    def __init__(self, client, down: list[bytes], up: list[bytes]) -> None:
        self.name, self._client, self._down, self._up = client.name, client, down, up

    def handle(self, payload: bytes) -> bytes:
        self._down.append(payload)
        reply = self._client.handle(payload)
        self._up.append(reply)
        return reply


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, object keys excepted."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_only_opaque_keys_questions_and_candidates_go_down_and_only_scalars_come_up(tmp_path) -> None:
    cfg = load_config("smoke", ["grpo.max_steps=2"])
    split = build_data(cfg)
    assert not any(hasattr(q, "answer") or hasattr(q, "entry") for q in split.train_questions)
    assert all(isinstance(q, Question) for q in split.train_questions)
    dataset = train_dataset(split.train_questions, cfg.model.worked_example)
    assert set(dataset.column_names) == {"prompt", "qid", "question", "domain"}

    down: list[bytes] = []
    up: list[bytes] = []
    transport = InProcessTransport([Recording(c, down, up) for c in build_clients(cfg, split)])
    # the competence exchange too (these clients have no model: each answers with an error reply)
    build_confidence_graph(transport, split.auxiliary, lambda t: torch.ones(len(t), 2), neighbours=2)
    competence = len(down)
    rewards = FederatedAdvantage(transport, AllSelector(), 2, cfg.num_generations)
    trainer = make_trainer(
        cfg, load_policy("tiny-random"), load_tokenizer("tiny-random"), dataset, rewards, tmp_path / "ckpt"
    )
    trainer.train()
    assert competence == len(transport.client_names) and len(down) > competence and len(up) == len(down)

    domains = {d for held in split.client_domains.values() for d in held} | set(split.heldout)
    assert "syllogism" in domains and len(domains) == 3
    examples = [*split.train_examples, *split.auxiliary, *(e for v in split.clients.values() for e in v)]
    qids = {e.qid for e in examples} | {make_qid(d, e.question) for d in domains for e in examples}
    server_texts = {q.question for q in split.train_questions}
    private = {ex.question: ex for examples in split.clients.values() for ex in examples}
    methods_seen = dict.fromkeys(METHODS, 0)
    ids = [decode(b).request_id for b in down]
    assert all(RANDOM_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)  # random, never reused
    for request_bytes, reply_bytes in zip(down, up, strict=True):
        # the decoded content, not only the raw bytes: compressed text would hide from a byte search
        request, reply = decode(request_bytes), decode(reply_bytes)
        (head, body_bytes), (reply_head, packed) = wire.split(request_bytes), wire.split(reply_bytes)
        body = json.loads(body_bytes)
        assert set(head) == {"v", "kind", "id"}  # no key, qid, domain or name: nothing per item
        keys = [item.key for item in request.items]
        assert keys == [str(k) for k in range(len(keys))]  # positions: they say nothing
        # everything but the candidates (which the policy wrote): no question id, no domain name
        ours = json.dumps([head, {k: v for k, v in body.items() if k != "candidates"}])
        for text in (ours, json.dumps(reply_head)):
            assert not any(q in text for q in qids), "a question id crossed"
            assert not any(d in text for d in domains) and "qid" not in text and "domain" not in text
        for raw in (request_bytes, reply_bytes):  # nor in the raw bytes, compressed or not
            assert not any(q.encode() in raw for q in qids) and not any(d.encode() in raw for d in domains)
        if isinstance(request, CompetenceRequest):  # the server's own auxiliary set, its own answers
            assert isinstance(reply, ErrorReply) and reply.error == "no model to answer competence queries"
            assert set(reply_head) == {"v", "kind", "id"} and packed == reply.error.encode()
            continue
        assert isinstance(request, RewardRequest) and set(body) == {"questions", "candidates"}
        for item in request.items:
            assert item.question in server_texts  # nothing appended to the question
            ex = private[item.question]
            # the label is nowhere in the request except where the model itself wrote it
            assert f"<answer>{ex.answer}</answer>" not in item.question + ours
        # up: rewards as packed bytes, per reply the counts and the items' lengths; nothing per item
        # but rewards (no per-item method), no bonus, and no string but the request id the server sent
        assert set(reply_head) == {"v", "kind", "id", "methods", "shape"}
        assert isinstance(reply, RewardReply) and reply_head["kind"] == "reward_reply"
        assert reply_head["id"] == head["id"]
        assert len(packed) == sum(len(item.candidates) for item in request.items)  # a byte per reward
        assert set(_strings(reply_head)) == {"reward_reply", head["id"]}
        assert [i.key for i in reply.items] == keys and all(i.method is None for i in reply.items)
        assert [len(i.rewards) for i in reply.items] == [len(i.candidates) for i in request.items]
        for item in reply.items:
            assert all(r is None or r in (0.0, 1.0) for r in item.rewards)  # answer-based: exact
        assert all(type(n) is int for n in reply_head["methods"])
        for m, n in reply.methods.items():
            methods_seen[m] += n
    assert methods_seen["answer"] > 0 and methods_seen["none"] > 0  # both kinds of items were in the run


def test_a_replacement_request_looks_like_any_first_request() -> None:
    """The top expert abstains and is replaced in the same round: the replacement's request carries
    no tag, round or name, so the client cannot tell it was asked only because another one failed."""
    sums = generate("sums_1digit", 4, seed=5)
    down: list[bytes] = []
    clients = [Client("top", []), Client("mid", sums), Client("low", sums)]  # "top" holds nothing
    transport = InProcessTransport([Recording(c, down, []) for c in clients])
    flat = torch.tensor([[1.0, 0.0]] * 3)
    graph = ConfidenceGraph(flat, torch.tensor([[1.0] * 3, [0.9] * 3, [0.0] * 3]), ["top", "mid", "low"], 3)
    selector = ConfidenceGraphSelector(graph, lambda texts: torch.tensor([[1.0, 0.0]] * len(texts)), seed=0)
    rewards = FederatedAdvantage(transport, selector, 2, 2)
    for _ in range(2):  # two rounds: the round number must not show either
        questions = [Question(ex.qid, ex.domain, ex.question) for ex in sums[:2]]
        rewards.advantages(questions, [[f"<answer>{ex.answer}</answer>", "x"] for ex in sums[:2]])
    assert rewards.total.replacements == 4 and rewards.total.rounds == 2  # "low" replaced "top" each time
    parts = [wire.split(b) for b in down]
    headers = [h for h, _ in parts]
    assert len(headers) == 6 and not any("client" in h for h in headers)  # first M, then the replacement
    ids = [h["id"] for h in headers]
    assert all(RANDOM_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    (first, first_body), (replacement, replacement_body) = parts[1], parts[2]  # "low": the replacement
    assert set(first) == set(replacement) and first["kind"] == replacement["kind"] == "reward"
    assert json.loads(first_body) == json.loads(replacement_body)  # the same questions and candidates
