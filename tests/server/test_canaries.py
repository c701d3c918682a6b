"""Hidden spot checks inside the real reward round: the same bytes as a training item, zero advantage,
and a liar found by its canary answers is no longer asked, across a resume."""

from __future__ import annotations

import json

import pytest
import torch

from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import Example, Question, generate
from fedgrpo.protocol import RewardRequest, decode
from fedgrpo.run.assemble import server_data_from_files
from fedgrpo.selection import AllSelector, RandomSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.server.canaries import REPUTATION_FILE, Canaries, canary_count, with_canaries
from fedgrpo.server.reputation import Reputation
from fedgrpo.simulation.adversaries import AdversarialEvaluator
from fedgrpo.simulation.data import write_example_files
from fedgrpo.transport import InProcessTransport
from tests import wire
from tests.helpers import KnowingModel


class Recording:
    """A client behind the in-process transport that keeps every request it receives."""

    def __init__(self, client: Client, down: list[bytes]) -> None:
        self.name, self._client, self._down = client.name, client, down

    def handle(self, payload: bytes) -> bytes:
        self._down.append(payload)
        return self._client.handle(payload)


def q(ex: Example) -> Question:
    return Question(ex.qid, ex.domain, ex.question)


def candidates(ex: Example) -> list[str]:
    return [
        f"<answer>{ex.answer}</answer>",
        f"<answer>{int(ex.answer) + 1}</answer>",
        "no tag",
        "<answer>0</answer>",
    ]


def test_a_canary_crosses_as_the_same_bytes_as_a_training_question_and_never_reaches_the_loss() -> None:
    sums = generate("sums_2digit", 3, seed=3)
    train, canary = sums[:2], sums[2]
    batch = [*train, canary]
    requests: dict[bool, list[bytes]] = {}
    advantages: dict[bool, list[torch.Tensor]] = {}
    for on in (False, True):  # the same round, once with the third question a canary, once not
        down: list[bytes] = []
        clients = [Recording(Client(f"c{k}", sums[k : k + 1]), down) for k in range(3)]
        checks = Canaries([canary], Reputation(0.05), 0.1) if on else None
        fed = FederatedAdvantage(InProcessTransport(clients), AllSelector(), 3, 4, canaries=checks)
        advantages[on] = fed.advantages([q(ex) for ex in batch], [candidates(ex) for ex in batch])
        requests[on] = down
        assert fed.total.canaries == int(on) and fed.total.questions == 3 - int(on)
    assert len(requests[True]) == len(requests[False]) == 3  # one request per client, no extra one
    for with_canary, without in zip(requests[True], requests[False], strict=True):
        (head, body), (head_plain, body_plain) = wire.split(with_canary), wire.split(without)
        assert body == body_plain  # the same question texts and candidates, in the same order
        assert {k: v for k, v in head.items() if k != "id"} == {
            k: v for k, v in head_plain.items() if k != "id"
        }
        request = decode(with_canary)
        assert isinstance(request, RewardRequest) and [i.key for i in request.items] == ["0", "1", "2"]
    assert torch.equal(advantages[True][2], torch.zeros(4, dtype=torch.float64))  # never in the loss
    assert advantages[False][2].abs().sum() > 0  # the same group as a training question has a signal
    for j in range(2):  # and the training groups are untouched
        assert torch.equal(advantages[True][j], advantages[False][j])


def test_a_flipping_client_is_excluded_by_its_canary_answers_then_never_asked_and_resumed(tmp_path) -> None:
    examples = generate("sums_2digit", 60, seed=4)
    train, canaries = examples[:20], examples[20:]
    model = KnowingModel(examples)
    names = ["c0", "c1", "c2", "liar"]

    def build() -> tuple[FederatedAdvantage, list[bytes]]:
        down: list[bytes] = []
        clients = []
        for name in names:
            honest = DualEvaluator(AnswerEvaluator([]), model)
            evaluator = AdversarialEvaluator(honest, "flip", 0, name) if name == "liar" else honest
            clients.append(Recording(Client(name, [], evaluator), down))
        checks = Canaries(canaries, Reputation(0.05, min_questions=10), 0.1, tmp_path)
        return FederatedAdvantage(InProcessTransport(clients), RandomSelector(0), 2, 4, canaries=checks), down

    fed, _ = build()
    for k in range(0, 40, 2):  # canaries only, two per round: the liar's j is -1 on every one
        fed.advantages([q(ex) for ex in canaries[k : k + 2]], [candidates(ex) for ex in canaries[k : k + 2]])
        if "liar" in fed.canaries.reputation.excluded():
            break
    report = json.loads((tmp_path / REPUTATION_FILE).read_text())
    assert (
        report["clients"]["liar"]["excluded_at"] == fed.total.rounds
        and report["clients"]["liar"]["honesty"] == -1.0
    )
    assert report["clients"]["liar"]["questions"] == 10  # the first moment it could be: min_questions
    assert all(
        report["clients"][c]["excluded_at"] is None and report["clients"][c]["honesty"] == 1.0
        for c in names[:3]
    )
    assert fed.total.excluded == {"liar": 1} and fed.total.summary()["fed/excluded"] == ["liar"]

    resumed, _ = build()  # a fresh server, restored from the checkpointed state
    resumed.load_state_dict(json.loads(json.dumps(fed.state_dict())))
    assert resumed.canaries.reputation.excluded() == {"liar"}
    resumed.drain()
    for k in range(0, 20, 2):
        resumed.advantages([q(ex) for ex in train[k : k + 2]], [candidates(ex) for ex in train[k : k + 2]])
        resumed.advantages([q(ex) for ex in canaries[36:38]], [candidates(ex) for ex in canaries[36:38]])
    since, _ = resumed.drain()
    assert "liar" not in since.routed and "liar" not in since.canaries_asked
    assert sum(since.routed.values()) == 2 * 20 and sum(since.canaries_asked.values()) == 2 * 20


def test_with_agreement_scorers_a_client_calling_two_answers_right_is_out_in_two_canaries() -> None:
    """The one-answer test in the real round: the flipper calls both wrong answers right on each
    canary, the honest clients one answer only; a client whose replies carry privacy noise is spared."""
    examples = generate("sums_2digit", 10, seed=5)
    model = KnowingModel(examples)
    clients = []
    for name in ["c0", "c1", "liar"]:
        honest = DualEvaluator(AnswerEvaluator([]), model)
        evaluator = AdversarialEvaluator(honest, "flip", 0, name) if name == "liar" else honest
        clients.append(Client(name, [], evaluator))
    checks = Canaries(examples, Reputation(0.05, min_questions=10), 0.1, one_answer=True)
    fed = FederatedAdvantage(InProcessTransport(clients), AllSelector(), 3, 4, canaries=checks)
    fed.advantages([q(ex) for ex in examples[:2]], [candidates(ex) for ex in examples[:2]])
    tallies = checks.reputation.tallies
    assert checks.reputation.excluded() == {"liar"} and tallies["liar"].split == 2
    assert tallies["c0"].split == tallies["c1"].split == 0
    matrix = torch.tensor([[1.0, 1.0, 0.0, 1.0]])  # two answers called right, but through privacy noise
    checks.observe(q(examples[3]), candidates(examples[3]), ["c0"], matrix, private={"c0"})
    assert tallies["c0"].split == 0 and "c0" not in checks.reputation.update(2)


def test_fanout_asks_each_canary_of_more_clients_and_training_questions_of_m() -> None:
    examples = generate("sums_2digit", 12, seed=5)
    train, canaries = examples[:6], examples[6:]
    model = KnowingModel(examples)
    clients = [Client(f"c{k}", [], DualEvaluator(AnswerEvaluator([]), model)) for k in range(5)]
    checks = Canaries(canaries, Reputation(0.05), 0.1, fanout=1, seed=3)
    fed = FederatedAdvantage(InProcessTransport(clients), RandomSelector(0), 2, 4, canaries=checks)
    batch = [*train[:3], *canaries[:3]]
    fed.advantages([q(ex) for ex in batch], [candidates(ex) for ex in batch])
    assert sum(fed.total.routed.values()) == 3 * 2 and sum(fed.total.canaries_asked.values()) == 3 * 3
    assert sum(t.questions for t in checks.reputation.tallies.values()) == 3 * 3
    with pytest.raises(ValueError, match="fanout"):
        Canaries(canaries, Reputation(0.05), 0.1, fanout=-1)


def test_fanout_takes_the_next_in_the_selectors_order_among_the_trusted() -> None:
    train, canary = generate("sums_2digit", 2, seed=6)
    checks = Canaries([canary], Reputation(0.05), 0.1, fanout=2)
    routing = {train.qid: ["a", "b"], canary.qid: ["a", "b"]}
    orders = {train.qid: ["a", "b", "c", "d", "e"], canary.qid: ["a", "b", "e", "c", "d"]}
    widened = checks.widen(routing, [q(train), q(canary)], ["a", "b", "c", "d"], orders)
    assert widened == {train.qid: ["a", "b"], canary.qid: ["a", "b", "c", "d"]}  # e is not trusted
    assert (
        Canaries([canary], Reputation(0.05), 0.1).widen(routing, [q(canary)], ["a", "b", "c"], None)
        == routing
    )


def test_canary_count_and_mixing() -> None:
    assert canary_count(12, 0.0) == 0 and canary_count(12, 0.25) == 4 and canary_count(30, 0.5) == 30
    sums = generate("sums_1digit", 10, seed=1)
    train = [q(ex) for ex in sums[:6]]
    prompts, used = with_canaries(train, [sums[0], *sums[6:]], 0.25)  # sums[0] is a training question
    assert used == sums[6:8] and prompts == [*train, q(sums[6]), q(sums[7])]


def test_a_deployment_reads_its_canaries_from_server_canaries(tmp_path) -> None:
    files = write_example_files(load_config("smoke", ["federation.canaries.share=0.25"]), tmp_path, seed=5)[
        "server"
    ]
    deploy = ["federation.transport=flower-deployment", "flower.insecure=true", "flower.num_supernodes=3"]
    deploy += [f"server.{k}={files[k]}" for k in ("questions", "heldout")]
    with pytest.raises(ConfigError, match="server.canaries"):
        load_config("smoke", [*deploy, "federation.canaries.share=0.25"])
    cfg = load_config(
        "smoke", [*deploy, "federation.canaries.share=0.25", f"server.canaries={files['canaries']}"]
    )
    data = server_data_from_files(cfg.server, cfg.federation.canaries.share)
    assert len(data.canaries) == 4 and len(data.train_questions) == 12 + 4
    assert {q.qid for q in data.train_questions[-4:]} == {ex.qid for ex in data.canaries}
    assert server_data_from_files(cfg.server).canaries == []  # share 0: the file is not even read
