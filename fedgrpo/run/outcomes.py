"""Each held-out question's outcome, saved in the run folder as ``outcomes.json``, so that two runs
that answered the same questions can be compared question by question (a paired test needs far
fewer questions than comparing two accuracies).

Small enough to commit: per domain the question ids (``make_qid``) once, in evaluation order, then
per evaluation (``before``, ``after``) one string of ``0``/``1`` per measure, character i for
question i::

    {"version": 1, "domains": {"sums_1digit": {"qids": ["3f2a...", ...],
        "before": {"strict": "0110...", "answer": "0111...", "tagged": "1111..."}, "after": {...}}}}

``strict``: the answer inside ``<answer>`` tags is right; ``answer``: the final answer, wherever
written, is right; ``tagged``: the completion has an answer tag. (The measures of
:mod:`fedgrpo.run.evaluate`.) Torch-free: the suite report reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedgrpo.storage.atomic import write_text_atomic

OUTCOMES_FILE = "outcomes.json"
MEASURES = ("strict", "answer", "tagged")


@dataclass(frozen=True)
class DomainOutcomes:
    """One domain's questions in evaluation order and, per measure, one ``0``/``1`` per question."""

    qids: tuple[str, ...]
    strict: str
    answer: str
    tagged: str

    @classmethod
    def of(
        cls, qids: list[str], strict: list[bool], answer: list[bool], tagged: list[bool]
    ) -> DomainOutcomes:
        bits = ["".join("1" if x else "0" for x in xs) for xs in (strict, answer, tagged)]
        if any(len(b) != len(qids) for b in bits):
            raise ValueError("one outcome per question and measure")
        return cls(tuple(qids), *bits)

    def bits(self, measure: str) -> str:
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; one of {MEASURES}")
        return getattr(self, measure)


def save_outcomes(folder: Path, when: str, outcomes: dict[str, DomainOutcomes]) -> None:
    """Add one evaluation (``before`` or ``after``) to the folder's ``outcomes.json``, keeping the
    others (a resumed run keeps its before-evaluation). A domain whose questions changed starts over."""
    path = folder / OUTCOMES_FILE
    data = json.loads(path.read_text()) if path.exists() else {"version": 1, "domains": {}}
    for domain, out in outcomes.items():
        entry = data["domains"].get(domain)
        if entry is None or entry["qids"] != list(out.qids):
            entry = data["domains"][domain] = {"qids": list(out.qids)}
        entry[when] = {m: out.bits(m) for m in MEASURES}
    write_text_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")  # compact: ~25 KB per 1,000


def load_outcomes(folder: Path, when: str) -> dict[str, DomainOutcomes] | None:
    """One evaluation's outcomes per domain from ``outcomes.json``; None when not recorded (a run
    from before the file existed, or an evaluation that did not run)."""
    path = folder / OUTCOMES_FILE
    if not path.exists():
        return None
    domains = json.loads(path.read_text())["domains"]
    found = {
        d: DomainOutcomes(tuple(e["qids"]), *(e[when][m] for m in MEASURES))
        for d, e in domains.items()
        if when in e
    }
    return found or None
