"""Simulation only: judge the federation's rounds with labels the experimenter holds, for metrics.

In a simulation the experimenter made the split, so it knows every client's data and the training
questions' answers; it can say whether an expert's reward matched the candidate's true correctness
and whether routed experts hold the question's domain. No real server has these labels: in a
deployment there is no audit and these metrics are absent. Nothing here feeds back into routing,
rewards or training.
"""

from __future__ import annotations

import math

from fedgrpo.method.answers import is_correct
from fedgrpo.server import GroupRecord
from fedgrpo.simulation.partition import FederatedSplit


class RoutingAudit:
    def __init__(self, split: FederatedSplit) -> None:
        self._by_qid = {ex.qid: ex for examples in split.clients.values() for ex in examples}
        self._by_qid.update({ex.qid: ex for ex in split.train_examples})
        self._client_domains = split.client_domains

    def summary(self, groups: list[GroupRecord]) -> dict[str, float | None]:
        checked = agree = routed = held = 0
        for g in groups:
            example = self._by_qid.get(g.question.qid)
            if example is not None:
                for i, text in enumerate(g.candidates):
                    correct = is_correct(example, text)
                    for r in g.rewards[:, i].tolist():
                        if not math.isnan(r):
                            checked += 1
                            agree += int((r >= 0.5) == correct)
            for client in g.asked:
                routed += 1
                held += int(self._client_domains.get(client, {}).get(g.question.domain, 0) > 0)
        return {
            "fed/reward_correctness": agree / checked if checked else None,
            "fed/routed_domain_share": held / routed if routed else None,
        }
