"""The coverage partition: client k holds domain k mod D alone, and the held-out set stays the same as
clients are added, so a coverage K sweep compares runs question by question."""

from __future__ import annotations

from fedgrpo.simulation.partition import build_split

DOMAINS = ["sums_1digit", "sums_2digit", "products"]


def test_each_added_client_brings_a_domain_no_other_client_holds_and_the_heldout_set_stays() -> None:
    splits = {k: build_split(DOMAINS, k, 20, 20, 9, 10, "by-domain", seed=3) for k in (1, 2, 3)}
    for k, split in splits.items():
        held = {c: {d for d, n in counts.items() if n} for c, counts in split.client_domains.items()}
        assert held == {f"client-{i}": {DOMAINS[i]} for i in range(k)}
        assert all(len(examples) == 20 for examples in split.clients.values())
        assert {q.domain for q in split.train_questions} == set(DOMAINS[:k])  # drawn from the clients' data
    heldout = [{d: [e.qid for e in exs] for d, exs in s.heldout.items()} for s in splits.values()]
    assert heldout[0] == heldout[1] == heldout[2]
    wrapped = build_split(DOMAINS, 4, 5, 5, 3, 2, "by-domain")  # K > D: the domains come round again
    assert wrapped.client_domains["client-3"] == {"sums_1digit": 5, "sums_2digit": 0, "products": 0}
