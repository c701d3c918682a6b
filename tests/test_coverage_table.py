"""docs/results.md's coverage table: each K against the largest, paired question by question over the
shared held-out set, per-domain accuracy beside, and runs of other partitions kept out of the K table."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fedgrpo.run.outcomes import DomainOutcomes, save_outcomes
from tests.helpers import load_script

DOMAINS = ["a", "b"]


def _run(folder: Path, name: str, k: int, answers: dict[str, str]) -> None:
    """A finished FedGRPO run with K clients whose after-evaluation answered ``answers`` per domain."""
    run = folder / "runs" / name
    run.mkdir(parents=True)
    after, outcomes = {}, {}
    for domain, bits in answers.items():
        n, correct = len(bits), bits.count("1")
        after[domain] = {"domain": domain, "n": n, "correct": correct, "accuracy": correct / n}
        after[domain] |= {"answer_correct": correct, "answer_accuracy": correct / n}
        ok = [c == "1" for c in bits]
        outcomes[domain] = DomainOutcomes.of([f"{domain}{i}" for i in range(n)], ok, ok, ok)
    results = {"name": name, "method": "fedgrpo", "steps": 1, "after": after, "communication": {}}
    (run / "results.json").write_text(json.dumps(results))
    config = {"seed": 0, "data": {"num_clients": k, "domains": DOMAINS, "partition": "by-domain"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    save_outcomes(run, "after", outcomes)


def test_each_k_is_compared_with_the_largest_on_the_same_questions(tmp_path: Path, monkeypatch) -> None:
    tables = load_script("scripts/results_tables.py")
    # K=1 holds domain a: right on a's first 8 of 10, on b's first 2; K=2 right on a's first 8, b's first 9
    _run(tmp_path, "coverage__seed=0__num_clients=1", 1, {"a": "1" * 8 + "00", "b": "11" + "0" * 8})
    _run(tmp_path, "coverage__seed=0__num_clients=2", 2, {"a": "1" * 8 + "00", "b": "1" * 9 + "0"})
    names = ["coverage__seed=0__num_clients=1", "coverage__seed=0__num_clients=2"]
    status = {name: {"method": "fedgrpo", "status": "done"} for name in names}
    (tmp_path / "suite.json").write_text(json.dumps({"runs": status}))
    monkeypatch.setattr(tables, "SWEEPS", tmp_path)
    table = tables.coverage().splitlines()
    assert table[0].startswith("| K | domains held | seeds | a | b | all domains | K=2 minus it |")
    one = [c.strip() for c in table[2].strip("|").split("|")]
    assert one[:6] == ["1", "a", "1", "0.800", "0.200", "0.500 [0.30, 0.70]"]
    # paired over the 20 shared questions: only K=2 right on b's 7, never only K=1
    assert one[6].startswith("+0.350") and one[7] == "McNemar b=7, c=0"
    two = [c.strip() for c in table[3].strip("|").split("|")]
    assert (
        two[:6] == ["2", "a, b", "1", "0.800", "0.900", "0.850 [0.64, 0.95]"] and two[6] == "(the reference)"
    )
    assert tables.sweeps().count("\n") == 1  # the K and M table: its header alone, no coverage run in it
