"""The confidence graph (Module 1) on hand-made graphs whose routing can be checked by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedgrpo.data import Question
from fedgrpo.selection import (
    SELECTORS,
    AllSelector,
    ConfidenceGraph,
    ConfidenceGraphSelector,
    OracleSelector,
    RandomSelector,
    Selector,
    make_selector,
    mean_pooled_embedder,
)


def unit(degrees: float) -> torch.Tensor:
    r = math.radians(degrees)
    return torch.tensor([math.cos(r), math.sin(r)])


# Exemplars on the unit circle at 0, 60, 150 and 250 degrees.
ANGLES = [0.0, 60.0, 150.0, 250.0]
# Client x exemplar correctness; global competence = row mean: a 2/4 = .5, b 3/4 = .75, c 3/4 = .75.
CORRECT = [
    [1.0, 1.0, 0.0, 0.0],  # a
    [1.0, 0.0, 1.0, 1.0],  # b
    [0.0, 1.0, 1.0, 1.0],  # c
]
CLIENTS = ["a", "b", "c"]


def hand_graph(neighbours: int = 2) -> ConfidenceGraph:
    # scaled embeddings: the graph must L2-normalise them itself
    emb = torch.stack([unit(a) * s for a, s in zip(ANGLES, [1.0, 3.0, 0.5, 2.0], strict=True)])
    return ConfidenceGraph(emb, torch.tensor(CORRECT), list(CLIENTS), neighbours=neighbours)


def angle_embed(texts: list[str]) -> torch.Tensor:
    """Test embedder: a question's text is its angle in degrees."""
    return torch.stack([unit(float(t)) for t in texts])


def q(qid: str, angle: float, domain: str = "d") -> Question:
    return Question(qid=qid, domain=domain, question=str(angle))


# --------------------------------------------------------------------------- the one factory
def test_one_factory_builds_every_selector_and_names_missing_inputs() -> None:
    assert SELECTORS == ("random", "all", "confidence-graph", "oracle")
    assert isinstance(make_selector("random", seed=0), RandomSelector)
    assert isinstance(make_selector("all"), AllSelector)
    graph = make_selector("confidence-graph", graph=hand_graph(), embed=angle_embed, seed=1)
    assert isinstance(graph, ConfidenceGraphSelector) and isinstance(graph, Selector)
    assert isinstance(make_selector("oracle", client_domains={"a": {"d": 1}}), OracleSelector)
    with pytest.raises(ValueError, match="built graph"):
        make_selector("confidence-graph")
    with pytest.raises(ValueError, match="domain counts"):
        make_selector("oracle")
    with pytest.raises(ValueError, match="unknown selector"):
        make_selector("best")


# --------------------------------------------------------------------------- hand-checked routing
def test_hand_made_competence_and_order() -> None:
    g = hand_graph()
    # 25 deg: distances 25 (e0), 35 (e1), 125 (e2), 135 (e3) -> neighbours {0, 1}
    # 100 deg: distances 100, 40 (e1), 50 (e2), 150 -> neighbours {1, 2}
    qs = torch.stack([unit(25.0), unit(100.0)])
    assert g.neighbours_of(qs).tolist() == [[0, 1], [1, 2]]
    # q25: a (1+1)/2 = 1, b (1+0)/2 = .5, c (0+1)/2 = .5
    # q100: a (1+0)/2 = .5, b (0+1)/2 = .5, c (1+1)/2 = 1
    expected = torch.tensor([[1.0, 0.5, 0.5], [0.5, 0.5, 1.0]])
    assert torch.equal(g.competence(qs), expected)
    assert torch.equal(g.global_competence(), torch.tensor([0.5, 0.75, 0.75]))
    # q25: b and c tie on competence (.5) and on global (.75) -> client order puts b first
    # q100: a and b tie on competence (.5); b's global .75 beats a's .5 although a comes first
    assert g.rank(qs) == [["a", "b", "c"], ["c", "b", "a"]]
    top2 = [order[:2] for order in g.rank(qs)]
    assert top2 == [["a", "b"], ["c", "b"]]
    # a single (d,) embedding is one question
    assert g.competence(unit(25.0)).shape == (1, 3)


def test_neighbours_capped_at_exemplar_count() -> None:
    g = hand_graph(neighbours=20)
    assert g.neighbours == 4
    # every client's competence is then its global competence
    assert torch.allclose(g.competence(unit(10.0)), g.global_competence().unsqueeze(0))


def test_available_subset_and_ranking_covers_all_available() -> None:
    g = hand_graph()
    orders = g.rank(torch.stack([unit(25.0), unit(100.0)]), available=["c", "a"])
    # ties fall to the graph's client order, whatever order `available` came in
    assert orders == [["a", "c"], ["c", "a"]]
    with pytest.raises(KeyError, match="zed"):
        g.rank(unit(25.0), available=["a", "zed"])


def test_all_ties_fall_back_to_global_competence() -> None:
    g = hand_graph()
    # q25 restricted to b and c: equal competence .5 -> global (tie .75) -> client order
    assert g.rank(unit(25.0), available=["b", "c"]) == [["b", "c"]]
    # a question whose neighbours are answered by every client equally: exemplar 0 right for a, b only,
    # so with L=1 and clients a, b both score 1 -> global: b (.75) before a (.5)
    g1 = hand_graph(neighbours=1)
    assert g1.competence(unit(5.0)).tolist() == [[1.0, 1.0, 0.0]]
    assert g1.rank(unit(5.0), available=["a", "b"]) == [["b", "a"]]


def test_empty_neighbourhood_falls_back_to_global() -> None:
    g = ConfidenceGraph(torch.zeros(0, 2), torch.zeros(3, 0), list(CLIENTS), neighbours=20)
    assert g.neighbours == 0
    assert g.neighbours_of(unit(25.0)).shape == (1, 0)
    assert torch.equal(g.competence(torch.stack([unit(1.0), unit(2.0)])), torch.zeros(2, 3))
    assert torch.equal(g.global_competence(), torch.zeros(3))
    assert g.rank(unit(25.0)) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exemplar_embeddings": torch.zeros(4)}, "2-d"),
        ({"correctness": torch.zeros(3, 5)}, r"\(3 x 4\)"),
        ({"correctness": torch.zeros(2, 4)}, r"\(3 x 4\)"),
        ({"correctness": torch.full((3, 4), 1.5)}, r"\[0, 1\]"),
        ({"correctness": torch.full((3, 4), -0.1)}, r"\[0, 1\]"),
        ({"correctness": torch.full((3, 4), float("nan"))}, "NaN"),
        ({"clients": ["a", "b", "a"]}, "unique"),
        ({"neighbours": 0}, "neighbours"),
    ],
)
def test_init_validation(kwargs: dict, message: str) -> None:
    args = {
        "exemplar_embeddings": torch.stack([unit(a) for a in ANGLES]),
        "correctness": torch.tensor(CORRECT),
        "clients": list(CLIENTS),
        "neighbours": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ConfidenceGraph(**args)


# --------------------------------------------------------------------------- exploration
def six_client_graph() -> ConfidenceGraph:
    torch.manual_seed(0)
    emb = torch.randn(10, 4)
    corr = (torch.rand(6, 10) > 0.5).float()
    return ConfidenceGraph(emb, corr, [f"k{i}" for i in range(6)], neighbours=3)


def test_epsilon_zero_is_deterministic() -> None:
    g = six_client_graph()
    qs = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    first = g.rank(qs, epsilon=0.0, rng=torch.Generator().manual_seed(1))
    assert first == g.rank(qs, epsilon=0.0, rng=torch.Generator().manual_seed(2)) == g.rank(qs)


def test_epsilon_one_is_seeded_random_permutation() -> None:
    g = six_client_graph()
    qs = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    a = g.rank(qs, epsilon=1.0, rng=torch.Generator().manual_seed(7))
    b = g.rank(qs, epsilon=1.0, rng=torch.Generator().manual_seed(7))
    c = g.rank(qs, epsilon=1.0, rng=torch.Generator().manual_seed(8))
    assert a == b
    assert a != c
    assert all(sorted(order) == g.clients for order in a)  # permutations of all clients
    assert len({tuple(order) for order in a}) > 40  # different orders across questions


def test_epsilon_explores_at_roughly_that_rate() -> None:
    g = six_client_graph()
    qs = torch.randn(400, 4, generator=torch.Generator().manual_seed(3))
    greedy = g.rank(qs)
    explored = g.rank(qs, epsilon=0.3, rng=torch.Generator().manual_seed(11))
    rate = sum(x != y for x, y in zip(greedy, explored, strict=True)) / len(qs)
    # expected 0.3 * (1 - 1/720); std ~0.023 over 400 questions
    assert 0.2 < rate < 0.4
    with pytest.raises(ValueError, match="epsilon"):
        g.rank(qs, epsilon=1.5)


# --------------------------------------------------------------------------- online update
def test_update_moves_only_neighbour_edges() -> None:
    g = hand_graph()
    g.update("a", unit(25.0), agreement=0.0, rate=0.1)  # neighbours {0, 1}
    # a's edges to e0, e1: 0.9 * 1 + 0.1 * 0 = 0.9; other edges and clients untouched
    assert torch.allclose(g.correctness[0], torch.tensor([0.9, 0.9, 0.0, 0.0]))
    assert torch.equal(g.correctness[1:], torch.tensor(CORRECT[1:]))
    g.update("c", unit(100.0), agreement=1.0, rate=0.5)  # neighbours {1, 2}: 0.5*1+0.5*1 = 1 stays
    assert torch.equal(g.correctness[2], torch.tensor(CORRECT[2]))


def test_client_that_keeps_disagreeing_loses_routing() -> None:
    g = hand_graph()
    near = torch.stack([unit(20.0), unit(35.0)])  # both attach to exemplars {0, 1}
    far = unit(210.0)  # attaches to {3, 2}
    far_before = g.rank(far)
    assert [order[0] for order in g.rank(near)] == ["a", "a"]
    for _ in range(3):
        g.update("a", unit(25.0), agreement=0.0)
        g.update("b", unit(25.0), agreement=1.0)
    # a: 0.9**3 = .729 on e0, e1 -> competence .729; b: e0 stays 1, e1 0 -> 1 - .9**3 = .271 -> mean .6355
    comp = g.competence(near)
    assert torch.allclose(comp[:, 0], torch.full((2,), 0.729), atol=1e-6)
    assert torch.allclose(comp[:, 1], torch.full((2,), (1.0 + 0.271) / 2), atol=1e-6)
    assert [order[0] for order in g.rank(near)] == ["a", "a"]  # not yet
    for _ in range(3):
        g.update("a", unit(25.0), agreement=0.0)
        g.update("b", unit(25.0), agreement=1.0)
    # a: .9**6 = .531; b: (1 + 1 - .531) / 2 = .734 -> b now ahead of a near e0/e1
    assert [order[:2] for order in g.rank(near)] == [["b", "a"], ["b", "a"]]
    assert g.rank(far) == far_before  # routing elsewhere is unchanged


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), float("inf"), "0.5", None, True])
def test_update_rejects_bad_agreement(bad: object) -> None:
    g = hand_graph()
    with pytest.raises(ValueError, match="agreement"):
        g.update("a", unit(25.0), agreement=bad)  # type: ignore[arg-type]
    assert torch.equal(g.correctness, torch.tensor(CORRECT))


def test_update_unknown_client() -> None:
    with pytest.raises(KeyError, match="unknown client 'zed'"):
        hand_graph().update("zed", unit(25.0), agreement=1.0)


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip_is_atomic(tmp_path) -> None:
    g = six_client_graph()
    g.update("k2", torch.randn(4), agreement=0.25)
    path = tmp_path / "graph.pt"
    g.save(path)
    g.save(path)  # overwriting works too
    assert [p.name for p in tmp_path.iterdir()] == ["graph.pt"]  # no temp file left behind
    h = ConfidenceGraph.load(path)
    assert h.clients == g.clients and h.neighbours == g.neighbours
    assert torch.equal(h.correctness, g.correctness)
    qs = torch.randn(200, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(h.competence(qs), g.competence(qs))
    assert h.rank(qs) == g.rank(qs)
    assert h.rank(qs, epsilon=0.5, rng=torch.Generator().manual_seed(1)) == g.rank(
        qs, epsilon=0.5, rng=torch.Generator().manual_seed(1)
    )


# --------------------------------------------------------------------------- selectors
def test_selector_routes_and_respects_availability() -> None:
    sel = ConfidenceGraphSelector(hand_graph(), angle_embed, seed=0)
    questions = [q("q25", 25.0), q("q100", 100.0)]
    assert sel.select(questions, CLIENTS, 2) == {"q25": ["a", "b"], "q100": ["c", "b"]}
    assert sel.rank_questions(questions, CLIENTS) == {"q25": ["a", "b", "c"], "q100": ["c", "b", "a"]}
    # a is unavailable: never returned, the next in line steps up
    assert sel.select(questions, ["b", "c"], 2) == {"q25": ["b", "c"], "q100": ["c", "b"]}
    assert sel.select(questions, ["b", "c"], 1) == {"q25": ["b"], "q100": ["c"]}
    with pytest.raises(ValueError, match="M=3"):
        sel.select(questions, ["b", "c"], 3)
    assert sel.select([], CLIENTS, 2) == {}


def test_selector_with_exploration_never_returns_unavailable() -> None:
    sel = ConfidenceGraphSelector(six_client_graph(), lambda t: torch.randn(len(t), 4), epsilon=0.5, seed=3)
    available = ["k0", "k2", "k5"]
    chosen = sel.select([q(f"q{i}", 0.0) for i in range(100)], available, 2)
    assert all(len(c) == 2 and set(c) <= set(available) for c in chosen.values())


def test_selector_embeds_in_one_batch() -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return angle_embed(texts)

    sel = ConfidenceGraphSelector(hand_graph(), embed, seed=0)
    sel.select([q(f"q{i}", float(i)) for i in range(30)], CLIENTS, 2)
    assert calls == [30]


def test_selector_state_round_trip_after_exploration() -> None:
    questions = [q(f"q{i}", float(i * 7 + 1)) for i in range(60)]
    sel = ConfidenceGraphSelector(hand_graph(), angle_embed, epsilon=0.5, seed=42)
    sel.select(questions, CLIENTS, 2)  # advance the generator
    sel.graph.update("a", unit(25.0), agreement=0.0)
    state = json.loads(json.dumps(sel.state_dict()))  # must survive a JSON checkpoint
    expected = [sel.select(questions, CLIENTS, 2) for _ in range(3)]

    resumed = ConfidenceGraphSelector(hand_graph(), angle_embed, epsilon=0.5, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.graph.correctness, sel.graph.correctness)
    assert [resumed.select(questions, CLIENTS, 2) for _ in range(3)] == expected


def test_oracle_selector_picks_domain_holders() -> None:
    holdings = {
        "k0": {"algebra": 5, "logic": 1},
        "k1": {"logic": 9},
        "k2": {"algebra": 5, "geometry": 2},
        "k3": {"geometry": 7, "logic": 9},
    }
    sel = OracleSelector(holdings)
    assert sel.name == "oracle"
    questions = [q("x", 0, "algebra"), q("y", 0, "logic"), q("z", 0, "geometry"), q("w", 0, "unseen")]
    clients = list(holdings)
    assert sel.select(questions, clients, 2) == {
        "x": ["k0", "k2"],  # 5 and 5 (tie by client order), k1 and k3 hold none
        "y": ["k1", "k3"],  # 9 and 9, tie by client order
        "z": ["k3", "k2"],  # 7 > 2
        "w": ["k0", "k1"],  # nobody holds it: client order
    }
    assert sel.select(questions, ["k2", "k3"], 1) == {"x": ["k2"], "y": ["k3"], "z": ["k3"], "w": ["k2"]}


# --------------------------------------------------------------------------- frozen encoder
def test_mean_pooled_embedder_tiny_random() -> None:
    from fedgrpo.models.loading import load_policy, load_tokenizer

    model = load_policy("tiny-random")
    tokenizer = load_tokenizer("tiny-random")
    tokenizer.padding_side = "left"  # must not matter: the embedder right-pads
    model.train()
    embed = mean_pooled_embedder(model, tokenizer, batch_size=2)
    short = "What is 2 + 3?"
    long = "A much longer question about the sum of several numbers, with many more tokens in it: 1 + 2 + 3?"
    out = embed([short, long, "Another one."])
    assert out.shape == (3, model.config.hidden_size)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    alone = embed([short])
    assert torch.allclose(alone[0], out[0], atol=1e-5)  # padding does not change a text's embedding
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    assert model.training and tokenizer.padding_side == "left"  # modes restored
    assert all(p.grad is None for p in model.parameters())
    # it plugs straight into a graph built from the same encoder
    graph = ConfidenceGraph(embed([short, long]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), ["x", "y"], 1)
    assert graph.rank(embed([short, long])) == [["x", "y"], ["y", "x"]]
