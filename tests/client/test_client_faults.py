"""30% of the clients crash or vanish mid-run (in-process): the rounds go on, on the survivors.

Ten real clients behind the in-process transport, the confidence graph ranking the three that will
die as the most competent (the worst case). After round 3 one raises, one answers nothing decodable
and one hangs up (ConnectionError). Every later round must still score every question, only with
survivors' rewards, and the fed/ counters must count every failed delivery. Without suspension
a dead client stays ranked first and is asked, fails and is replaced within every round; with
``rejoin_interval_s`` (what ``fedgrpo run`` uses, as the Flower transport does) it is suspended after
its first failure, so routing moves away, and offered again once the interval has passed.
"""

from __future__ import annotations

import torch

from fedgrpo.client import Client
from fedgrpo.data import Question, generate
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport

SUMS = generate("sums_1digit", 8, seed=3)
DEAD = {"c0": RuntimeError("out of memory"), "c1": None, "c2": ConnectionError("peer vanished")}


class Mortal:
    """A real client until ``alive`` is switched off; then it raises, or answers empty bytes (None)."""

    def __init__(self, client: Client) -> None:
        self.name, self._client, self.alive = client.name, client, True

    def handle(self, payload: bytes) -> bytes:
        if self.alive:
            return self._client.handle(payload)
        failure = DEAD[self.name]
        if failure is None:
            return b""
        raise failure


def federation(
    rejoin_interval_s: float | None,
) -> tuple[list[Mortal], InProcessTransport, FederatedAdvantage]:
    """Ten clients holding the answers; the graph ranks c0 > c1 > ... > c9 everywhere; M = 3."""
    names = [f"c{i}" for i in range(10)]
    clients = [Mortal(Client(n, SUMS)) for n in names]
    competence = torch.tensor([[1.0 - 0.05 * i] * 3 for i in range(10)])
    graph = ConfidenceGraph(torch.eye(3, 2), competence, names, neighbours=3)
    selector = ConfidenceGraphSelector(graph, lambda texts: torch.tensor([[1.0, 0.0]] * len(texts)), seed=0)
    transport = InProcessTransport(clients, rejoin_interval_s=rejoin_interval_s)
    return clients, transport, FederatedAdvantage(transport, selector, 3, 4)


def play_round(rewards: FederatedAdvantage, round_: int) -> None:
    """Two questions, the right answer among four candidates; it must win both groups."""
    batch = SUMS[(2 * round_) % 8 : (2 * round_) % 8 + 2]
    questions = [Question(ex.qid, ex.domain, ex.question) for ex in batch]
    candidates = [[f"<answer>{ex.answer}</answer>", "<answer>-1</answer>", "x", "y"] for ex in batch]
    assert all(a[0] > 0 for a in rewards.advantages(questions, candidates))


def test_the_run_goes_on_on_the_survivors_when_30_percent_crash() -> None:
    clients, _, rewards = federation(rejoin_interval_s=None)  # nothing suspended: the worst case
    for round_ in range(1, 4):
        play_round(rewards, round_)
    before, _ = rewards.drain()
    for c in clients[:3]:
        c.alive = False
    for round_ in range(4, 11):
        play_round(rewards, round_)
    after, groups = rewards.drain()
    assert before.rejected.total() == 0 and set(before.routed) == {"c0", "c1", "c2"}
    dead = set(DEAD)
    assert after.rounds == 7 and after.groups_scored == 14  # every question still scored
    # the dead stay ranked first: asked about every question, they fail and are replaced in the round
    assert all(after.routed[c] == 14 for c in dead) and after.replacements <= 3 * 14
    # every failed delivery counted, by reason: one batched request per client and round
    assert after.rejected == {"client_failed": 2 * 7, "malformed_reply": 7}
    still_dead = 0  # a dead expert whose one replacement was dead as well
    for group in groups:
        for e, client in enumerate(group.experts):
            scored = ~torch.isnan(group.rewards[e])
            assert bool(scored.all()) == (client not in dead)  # rewards only from survivors, all of theirs
            still_dead += client in dead
    assert after.rewards_missing == 4 * still_dead
    summary = after.summary()
    assert summary["fed/rejected_total"] == 21 and summary["fed/unscored_share"] == 0


def test_crashed_clients_are_suspended_so_routing_moves_away_and_they_rejoin_when_back() -> None:
    clients, transport, rewards = federation(rejoin_interval_s=3600.0)
    play_round(rewards, 1)
    rewards.drain()
    for c in clients[:3]:
        c.alive = False
    play_round(rewards, 2)  # the crash round: asked once, failed, replaced in the round, suspended
    crash, _ = rewards.drain()
    assert crash.routed["c0"] == crash.routed["c2"] == 2 and crash.rejected["client_failed"] == 2
    assert transport.client_names == [f"c{i}" for i in (1, *range(3, 10))]
    for round_ in range(3, 9):
        play_round(rewards, round_)
    later, groups = rewards.drain()
    assert later.routed["c0"] == later.routed["c2"] == 0  # routing moved away from the crashed
    assert later.rejected == {"malformed_reply": 6}  # c1 answers garbage: alive, rejected, not suspended
    assert all(not {"c0", "c2"} & set(g.asked) for g in groups)
    assert transport.summary()["clients_suspended"] == 2 and transport.summary()["suspended"] == ["c0", "c2"]

    for c in clients[:3]:
        c.alive = True
    transport.rejoin_interval_s = 0.0  # the interval has passed: the next request is their probe
    play_round(rewards, 9)
    back, _ = rewards.drain()
    assert back.routed["c0"] == 2 and back.rejected.total() == 0  # the top one is routed to again
    assert transport.client_names == [f"c{i}" for i in range(10)]  # c2 is offered again too (now ranked
    # below c3, whose agreement updates moved it up while c2 was away)
    assert transport.summary()["suspended"] == [] and transport.summary()["clients_probed"] == 2
