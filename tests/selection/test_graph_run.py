"""The confidence graph inside real runs: competence queries, routing with replacement, online updates.

Everything is real: clients behind the in-process transport, encoded bytes, tiny models only.
"""

from __future__ import annotations

import json

import pytest
import torch

from fedgrpo.client import Client, Evaluation
from fedgrpo.client.answer_scoring import AnswerEvaluator
from fedgrpo.config import load_config
from fedgrpo.data import Question, generate
from fedgrpo.protocol import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ProtocolError,
    decode,
    encode,
)
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.server import FederatedAdvantage, build_confidence_graph
from fedgrpo.simulation.clients import build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport
from tests.wire import header, join, split


@pytest.fixture(scope="module")
def sums():
    return generate("sums_1digit", 6, seed=5)


def flat_embed(texts: list[str]) -> torch.Tensor:
    """Every text at the same point: competence is then each client's mean over all exemplars."""
    return torch.tensor([[1.0, 0.0]] * len(texts))


def graph_selector(rows: list[list[float]], clients: list[str]) -> ConfidenceGraphSelector:
    exemplars = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    graph = ConfidenceGraph(exemplars, torch.tensor(rows), clients, neighbours=3)
    return ConfidenceGraphSelector(graph, flat_embed, seed=0)


class CountingTransport(InProcessTransport):
    """The in-process transport, counting exchanges (one per request batch)."""

    exchanges = 0

    def exchange(self, requests):
        self.exchanges += 1
        return super().exchange(requests)


class Contrarian:
    """A client evaluator that holds the answers but always scores the opposite way."""

    def __init__(self, examples) -> None:
        self.answers = AnswerEvaluator(examples)

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        honest = self.answers.evaluate(question, candidates)
        return Evaluation([None if r is None else 1.0 - r for r in honest.rewards], honest.method)


def candidates_for(example) -> list[str]:
    return [f"<answer>{example.answer}</answer>", "<answer>-1</answer>", "<answer>-2</answer>", "none"]


# --------------------------------------------------------------------------- a whole run


# --------------------------------------------------------------------------- replacement
class Crashing:
    name = "top"

    def handle(self, request: bytes) -> bytes:
        raise RuntimeError("client down")


@pytest.mark.parametrize(("m", "top"), [(1, "abstains"), (2, "abstains"), (2, "crashes")])
def test_abstaining_top_expert_is_replaced_in_the_same_round(sums, m: int, top: str) -> None:
    ex = sums[0]
    # "top" is the most competent but holds no data and has no model (it abstains), or it crashes.
    clients = [
        Client("top", []) if top == "abstains" else Crashing(),
        Client("mid", sums),
        Client("low", sums),
    ]
    transport = CountingTransport(clients)
    selector = graph_selector([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], ["top", "mid", "low"])
    rewards = FederatedAdvantage(transport, selector, m, 4, "mean")
    adv = rewards.advantages([Question(ex.qid, ex.domain, ex.question)], [candidates_for(ex)])[0]
    assert transport.exchanges == 2  # the first M, then one extra exchange for the replacement
    stats = rewards.total
    assert stats.replacements == 1 and stats.rounds == 1
    expected_routed = {"top": 1, "mid": 1, "low": 1} if m == 2 else {"top": 1, "mid": 1}
    assert dict(stats.routed) == expected_routed
    matrix = rewards.last_rewards[0]
    assert matrix.shape == (m, 4) and not torch.isnan(matrix).any()  # the replacement's rewards are used
    assert matrix[:, 0].tolist() == pytest.approx([1.1] * m)
    assert adv[0] > 0 > adv[1]
    summary = stats.summary()
    assert sum(summary["fed/routed"].values()) == m + summary["fed/replacements"]


def test_no_replacement_when_every_expert_scores(sums) -> None:
    ex = sums[0]
    transport = CountingTransport([Client("a", sums), Client("b", sums), Client("c", [])])
    selector = graph_selector([[1.0] * 3, [1.0] * 3, [0.0] * 3], ["a", "b", "c"])
    rewards = FederatedAdvantage(transport, selector, 2, 4)
    rewards.advantages([Question(ex.qid, ex.domain, ex.question)], [candidates_for(ex)])
    assert transport.exchanges == 1 and rewards.total.replacements == 0
    assert dict(rewards.total.routed) == {"a": 1, "b": 1}


# --------------------------------------------------------------------------- online update
def test_expert_that_always_disagrees_loses_competence(sums) -> None:
    clients = [Client("h1", sums), Client("h2", sums), Client("liar", sums, evaluator=Contrarian(sums))]
    selector = graph_selector([[1.0] * 3, [1.0] * 3, [1.0] * 3], ["h1", "h2", "liar"])
    rewards = FederatedAdvantage(InProcessTransport(clients), selector, 3, 4, online_update_rate=0.3)
    before = selector.graph.correctness
    for ex in sums[:5]:
        rewards.advantages([Question(ex.qid, ex.domain, ex.question)], [candidates_for(ex)])
    after = selector.graph.correctness
    assert rewards.total.online_updates >= 5
    liar_competence = selector.graph.competence(flat_embed(["q"]))[0, 2]
    assert liar_competence < 0.2 < 0.9 < float(before[2].mean())  # 0.7^5 = 0.17
    assert torch.equal(after[:2], before[:2])  # the honest experts tie on the liar: unchanged
    ex = sums[5]
    routed = selector.select([Question(ex.qid, ex.domain, ex.question)], ["h1", "h2", "liar"], 2)
    assert routed[ex.qid] == ["h1", "h2"]

    # the checkpointed state (fedgrpo_state.json) carries the updated graph into a resumed run
    state = json.loads(json.dumps(rewards.state_dict()))
    fresh = graph_selector([[1.0] * 3, [1.0] * 3, [1.0] * 3], ["h1", "h2", "liar"])
    FederatedAdvantage(InProcessTransport(clients), fresh, 3, 4).load_state_dict(state)
    assert torch.allclose(fresh.graph.correctness, after)


# --------------------------------------------------------------------------- bad input
class Scripted:
    def __init__(self, name: str, script) -> None:
        self.name = name
        self.script = script

    def handle(self, request: bytes) -> bytes:
        return self.script(decode(request))


def _bits(bits):
    return lambda request: encode(CompetenceReply(request.request_id, request.client, bits))


def _raw(n: int, body: bytes):
    return lambda request: join(header("competence_reply", request.request_id, n=n), body)


def test_bad_competence_replies_get_all_zero_rows(sums) -> None:
    aux = sums[:3]
    clients = [
        Scripted("good", _bits([1, 0, 1])),
        Scripted("short", _bits([1, 1])),
        Scripted("long", _bits([1, 0, 1, 1])),
        Scripted("padded", _raw(3, b"\xff")),  # bits beyond the third set: no honest encoder sends them
        Scripted("garbage", lambda b: b"\xff"),
        Client("no_model", sums),  # answers with an error reply: it has no model
    ]
    graph, stats = build_confidence_graph(InProcessTransport(clients), aux, flat_embed, neighbours=2)
    corr = graph.correctness
    assert corr[0].tolist() == [1.0, 0.0, 1.0]
    assert corr[1:].abs().sum() == 0  # every rejected client: an all-zero row
    assert stats["rejected"] == {"invalid_bits": 2, "malformed_reply": 2, "client_error": 1}
    assert "no model to answer competence queries" in stats["rejected_clients"]["no_model"]
    assert stats["bytes_down"] > 0 and stats["bytes_up"] > 0 and stats["client_forward_passes"] == 6 * 3


def test_competence_messages_round_trip_and_reject_malformed() -> None:
    req = CompetenceRequest("r", "c", [CompetenceItem("0", "What is 1 + 1?", "2")])
    assert decode(encode(req), client="c") == req
    reply = CompetenceReply("r", "c", [1, 0])
    assert decode(encode(reply), client="c") == reply
    assert len(split(encode(CompetenceReply("r", "c", [1] * 80)))[1]) == 10  # a bit each
    with pytest.raises(ValueError):  # an encoder sends bits, nothing else
        encode(CompetenceReply("r", "c", [1, 2]))
    for bad in (
        join(header("competence"), b'{"questions":["q"]}'),
        join(header("competence"), b'{"questions":["q"],"answers":[1]}'),
        join(header("competence_reply", n=101), b"\xa0"),
        join(header("competence_reply"), b"\xa0"),  # no bit count
        join({**header("competence_reply", n=1), "v": 2}, b"\x80"),  # old version
    ):
        with pytest.raises(ProtocolError):
            decode(bad)


def test_unloadable_client_model_leaves_too_few_clients() -> None:
    cfg = load_config("graph-smoke", ["clients.model=no-such-org/no-such-model"])
    split = build_data(cfg)
    with pytest.raises(RuntimeError, match="only 0 of 3 clients are available.*failed to load"):
        build_clients(cfg, split)
