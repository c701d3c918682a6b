"""30% of the clients crash or vanish mid-run (in-process): the rounds go on, on the survivors.

Ten real clients behind the in-process transport, the confidence graph ranking the three that will
die as the most competent (the worst case). After round 3 one raises, one answers nothing decodable
and one hangs up (ConnectionError). Every later round must still score every question, only with
survivors' rewards, and the fed/ counters must count every failed delivery. (In-process nothing
suspends a dead client: it stays ranked and is asked, fails and is replaced within the round; the
Flower transport suspends it until it answers a probe.)
"""

from __future__ import annotations

import torch

from fedgrpo.client import Client
from fedgrpo.data import Question, generate
from fedgrpo.selection import ConfidenceGraph, ConfidenceGraphSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport

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


def test_the_run_goes_on_on_the_survivors_when_30_percent_crash() -> None:
    sums = generate("sums_1digit", 8, seed=3)
    names = [f"c{i}" for i in range(10)]
    clients = [Mortal(Client(n, sums)) for n in names]
    competence = torch.tensor([[1.0 - 0.05 * i] * 3 for i in range(10)])  # c0 > c1 > ... > c9
    graph = ConfidenceGraph(torch.eye(3, 2), competence, names, neighbours=3)
    selector = ConfidenceGraphSelector(graph, lambda texts: torch.tensor([[1.0, 0.0]] * len(texts)), seed=0)
    m = 3
    rewards = FederatedAdvantage(InProcessTransport(clients), selector, m, 4)
    before = after = None
    for round_ in range(1, 11):
        if round_ == 4:
            for c in clients[:3]:
                c.alive = False
            before, _ = rewards.drain()
        batch = sums[(2 * round_) % 8 : (2 * round_) % 8 + 2]
        questions = [Question(ex.qid, ex.domain, ex.question) for ex in batch]
        candidates = [[f"<answer>{ex.answer}</answer>", "<answer>-1</answer>", "x", "y"] for ex in batch]
        advantages = rewards.advantages(questions, candidates)
        assert all(a[0] > 0 for a in advantages)  # the right answer still wins every group
    after, groups = rewards.drain()
    assert before is not None and before.rejected.total() == 0 and set(before.routed) <= {"c0", "c1", "c2"}
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
