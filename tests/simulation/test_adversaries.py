"""Simulated adversaries (``clients.adversaries``): what each behaviour replies, that the server's checks
let it through, and that the confidence graph's online updates route a persistent liar away.

Real clients behind the in-process transport, a real ConfidenceGraph; no models.
"""

from __future__ import annotations

import pytest
import torch

from fedgrpo.client import AnswerEvaluator, Client
from fedgrpo.client.factory import make_client
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import Question, generate
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.simulation.adversaries import AdversarialEvaluator
from fedgrpo.simulation.clients import adversary, build_clients
from fedgrpo.simulation.data import build_data
from fedgrpo.transport import InProcessTransport

NAMES = [f"client-{k}" for k in range(5)]


@pytest.fixture(scope="module")
def sums():
    return generate("sums_1digit", 12, seed=3)


def candidates_for(example) -> list[str]:
    """Right and tagged, wrong and tagged (twice, the same answer), untagged."""
    return [f"<answer>{example.answer}</answer>", "<answer>-1</answer>", "<answer>-1</answer>", "no idea"]


def config(adversaries: dict[str, str]):
    text = "{" + ", ".join(f"{c}: {b}" for c, b in adversaries.items()) + "}"
    return load_config(
        "smoke", ["data.num_clients=5", "federation.experts_per_question=3", f"clients.adversaries={text}"]
    )


def reply_rewards(client: Client, example, candidates: list[str]) -> list[float | None]:
    transport = InProcessTransport([client])
    rewards = FederatedAdvantage(transport, ConfidenceGraphSelector(*flat_graph([client.name]), seed=0), 1, 4)
    rewards.advantages([Question(example.qid, example.domain, example.question)], [candidates])
    assert not rewards.total.rejected  # every behaviour passes the server's reply checks
    return [None if torch.isnan(r) else round(float(r), 6) for r in rewards.last_rewards[0][0]]


def flat_graph(clients: list[str]) -> tuple[ConfidenceGraph, object]:
    """Every client fully competent at start (the liar passed the competence queries); one region."""
    exemplars = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    graph = ConfidenceGraph(exemplars, torch.ones(len(clients), 3), clients, neighbours=3)
    return graph, lambda texts: torch.tensor([[1.0, 0.0]] * len(texts))


# --------------------------------------------------------------------------- each behaviour
def test_flip_inverts_correctness_and_abstains_where_honest(sums) -> None:
    cfg = config({"client-1": "flip"})
    liar = make_client(cfg, "client-1", sums[:6], None, adversary(cfg, "client-1"))
    honest = make_client(cfg, "client-0", sums[:6], None)
    ex = sums[0]
    assert reply_rewards(honest, ex, candidates_for(ex)) == [1.1, 0.1, 0.1, 0.0]
    assert reply_rewards(liar, ex, candidates_for(ex)) == [0.1, 1.1, 1.1, 1.0]  # the server adds 0.1 to tags
    other = sums[8]  # not in its data: nothing to flip
    assert reply_rewards(liar, other, candidates_for(other)) == [None] * 4


def test_always_high_and_random_score_every_question(sums) -> None:
    cfg = config({"client-1": "always-high", "client-2": "random"})
    high = make_client(cfg, "client-1", [], None, adversary(cfg, "client-1"))
    ex = sums[0]
    assert reply_rewards(high, ex, candidates_for(ex)) == [1.1, 1.1, 1.1, 1.0]  # correctness 1 + the format
    draws = []
    for name in ("client-2", "client-2", "client-3"):
        liar = AdversarialEvaluator(AnswerEvaluator([]), "random", cfg.seed, name)
        draws.append(liar.evaluate(ex.question, candidates_for(ex) * 5).rewards)
    assert all(0.0 <= r <= 1.0 for r in draws[0])  # correctness only: the server adds the format reward
    assert draws[0] == draws[1] != draws[2]  # seeded per run and client
    assert len(set(draws[0])) == 20


def test_colluders_agree_on_one_answer_whatever_data_they_hold(sums) -> None:
    cfg = config({"client-1": "colluding", "client-3": "colluding"})
    one = make_client(cfg, "client-1", sums[:6], None, adversary(cfg, "client-1"))
    two = make_client(cfg, "client-3", [], None, adversary(cfg, "client-3"))
    promoted_wrong = 0
    for ex in sums:
        cands = candidates_for(ex)
        a, b = reply_rewards(one, ex, cands), reply_rewards(two, ex, cands)
        assert a == b and sorted(set(a[:3])) in ([0.1, 1.1], [1.1])  # 1 or 0, + 0.1 for the tag
        assert a[3] == 0.0 and a[1] == a[2]  # no answer: never promoted; the same answer: the same reward
        promoted_wrong += a[1] == 1.1
    assert 0 < promoted_wrong < len(sums)  # the shared rule picks the wrong answer for some questions


def test_build_clients_wraps_only_the_named_client() -> None:
    cfg = config({"client-2": "always-high"})
    clients = {c.name: c for c in build_clients(cfg, build_data(cfg))}
    assert set(clients) == set(NAMES)
    ex = build_data(cfg).train_examples[0]
    high = [c for c in NAMES if reply_rewards(clients[c], ex, candidates_for(ex)) == [1.1, 1.1, 1.1, 1.0]]
    assert high == ["client-2"]


def test_bad_adversaries_fail_at_validation_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"clients\.adversaries\.client-1: Input should be 'flip'"):
        config({"client-1": "liar"})
    with pytest.raises(ConfigError, match=r"clients.adversaries: no client named \['client-7'\]"):
        config({"client-7": "flip"})
    with pytest.raises(ConfigError, match="colluding needs two or more clients"):
        config({"client-1": "colluding"})
    with pytest.raises(ConfigError, match="simulation only"):
        load_config(
            "smoke",
            [
                "federation.transport=flower-deployment",
                "flower.insecure=true",
                "flower.num_supernodes=3",
                "clients.adversaries={client-1: flip}",
            ],
        )


# --------------------------------------------------------------------------- caught by the online update
def graph_federation(cfg, examples) -> tuple[ConfidenceGraphSelector, FederatedAdvantage]:
    """K=5 clients that all hold ``examples`` (adversaries as configured), M=3 by a real confidence graph
    that starts with every client fully competent, median aggregation, online update rate 0.3."""
    clients = [make_client(cfg, c, examples, None, adversary(cfg, c)) for c in NAMES]
    graph, embed = flat_graph(NAMES)
    selector = ConfidenceGraphSelector(graph, embed, seed=0)
    transport = InProcessTransport(clients)
    return selector, FederatedAdvantage(transport, selector, 3, 4, "median", online_update_rate=0.3)


@pytest.mark.parametrize("behaviour", ["flip", "always-high", "random"])
def test_online_updates_route_a_persistent_liar_away(sums, behaviour: str) -> None:
    """Five clients that all hold the questions, one lying; M=3 of K=5 by a real confidence graph that
    starts with every client fully competent, the liar ranked first among equals."""
    cfg = config({"client-0": behaviour})
    selector, rewards = graph_federation(cfg, sums)
    liar_routed = []
    for ex in sums:
        rewards.advantages([Question(ex.qid, ex.domain, ex.question)], [candidates_for(ex)])
        liar_routed.append(rewards.total.routed["client-0"])
    competence = selector.competences()
    assert competence["client-0"] < 0.8 < min(competence[c] for c in NAMES[1:]) == 1.0
    assert liar_routed[0] == 1 and liar_routed[-1] <= 3  # asked first, then (almost) never again
    ex = sums[0]
    assert "client-0" not in selector.select([Question(ex.qid, ex.domain, ex.question)], NAMES, 3)[ex.qid]


def test_two_colluders_among_three_experts_are_a_majority_the_update_cannot_see(sums) -> None:
    """The limit of agreement-based trust: two colluders routed with one honest expert agree with each
    other, so it is the honest expert whose competence falls."""
    cfg = config({"client-0": "colluding", "client-1": "colluding"})
    selector, rewards = graph_federation(cfg, sums)
    ex = sums[0]
    rewards.advantages([Question(ex.qid, ex.domain, ex.question)], [candidates_for(ex)])
    competence = selector.competences()
    assert competence["client-0"] == competence["client-1"] == 1.0 > competence["client-2"]
