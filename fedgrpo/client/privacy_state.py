"""The organisation's privacy state file: its ledger and released-value cache, across runs.

One file per organisation data (by default next to its data file; a simulation keeps one per client
in the run folder), never per run: the run's name is chosen by the server, so a state keyed by it
could be reset by a server that renames its run. Each run's spend is recorded inside the file
(``runs``), and the totals (``summary``) are written with every save, so ``fedgrpo privacy show``
reads them without composing anything. With a DP-SGD expert, the epsilons composed with its training
privacy are kept too (``training_epsilons``, keyed by the training's values), so a ClientApp process
(one per message) composes nothing already composed. Only ``fedgrpo privacy reset STATE --yes``
starts it afresh, and even then the previous totals are kept under ``resets``.

The file is the organisation's (mode 0600) and never leaves it; a lock file beside it makes
overlapping ClientApp processes take turns.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedgrpo.client.privacy_ledger import example_id
from fedgrpo.storage.atomic import write_text_atomic

STATE_FORMAT = 2
STATE_FOLDER = "privacy-state"  # a simulation's clients' states, in its run folder


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file while a state is read, changed and written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(path: Path, charge: str | None = None) -> dict[str, Any]:
    """The state in ``path`` (empty when there is none yet). A format-1 state (kept per run) is taken
    over conservatively when ``charge`` says at what its values were released (it did not record it):
    each value it cached is charged to the question's example."""
    if not path.exists():
        return {}
    state = json.loads(path.read_text())
    if state.get("format") == STATE_FORMAT:
        return state
    if state.get("format") == 1 and charge is not None:
        return _from_format_1(state, charge)
    raise ValueError(
        f"privacy state {path.name}: format {state.get('format')!r} (format 1 is converted when the "
        "organisation's client next answers)"
    )


def _from_format_1(old: dict[str, Any], charge: str) -> dict[str, Any]:
    examples: dict[str, dict[str, int]] = {}
    for question, answers in old.get("cache", {}).items():
        n = sum(a != "competence" for a in answers)
        if n:  # the old file did not say which were answer checks: all are charged (an upper bound)
            examples[example_id(question)] = {charge: n}
    return {
        "format": STATE_FORMAT,
        "examples": examples,
        "cache": old.get("cache", {}),
        "runs": {
            str(old.get("run", "before-format-2")): {
                "values_sent": {},
                "model_releases_uncovered": 0,
                "format_1_counts": old.get("counts", {}),
            }
        },
    }


def write_state(path: Path, state: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps({**state, "format": STATE_FORMAT}), private=True)


def privacy_totals(path: Path) -> dict[str, Any]:
    """A state's per-example totals (the largest per-example epsilon, the budget, how many examples
    reached it, what is not covered), as a simulation's ``results.json`` reports them per client."""
    with locked(path):
        summary = dict(read_state(path).get("summary", {}))
    summary.pop("delta", None)  # the same delta as the per-release figure beside it
    return summary


def show(path: Path) -> dict[str, Any]:
    """What the organisation spent: its totals and each run's record (no cache, no example ids)."""
    with locked(path):
        state = read_state(path)
    if not state:
        raise FileNotFoundError(f"no privacy state at {path}")
    return {
        "owner": state.get("owner"),
        "policy": state.get("policy"),
        "total": state.get("summary", {}),
        "runs": state.get("runs", {}),
        "resets": state.get("resets", []),
    }


def reset(path: Path) -> dict[str, Any]:
    """Start the ledger and cache afresh, keeping the totals that are dropped under ``resets``."""
    with locked(path):
        state = read_state(path)
        if not state:
            raise FileNotFoundError(f"no privacy state at {path}")
        dropped = {"at": now(), "total": state.get("summary", {}), "runs": sorted(state.get("runs", {}))}
        fresh = {"owner": state.get("owner"), "resets": [*state.get("resets", []), dropped]}
        write_state(path, fresh)
    return dropped
