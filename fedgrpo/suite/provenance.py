"""Which code a suite's run ran, so the report can mark a row whose method has changed since (stale).

The runner records, each time it starts a run, the git commit (when the package sits in a git work
tree) and a hash of the method's own source files (works outside git too: an installed package). A
stale row is one whose recorded hash differs from the current code's. Records made before this was
recorded carry no hash; for them a suite folder may list stale runs by hand in ``stale.yaml``
(``run name: reason``).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import yaml

PACKAGE = Path(__file__).resolve().parent.parent  # the fedgrpo package
STALE_FILE = "stale.yaml"

# method -> its own source, relative to the package: what, when it changes, changes that method's
# results (shared code, the evaluation included, is left out so that a refactor does not mark all)
METHOD_SOURCES: dict[str, tuple[str, ...]] = {
    "fedgrpo": ("method", "server", "selection", "client"),
    "zero-shot": ("algorithms/zero_shot.py",),
    "central-grpo": ("algorithms/central_grpo.py",),
    "fedpetuning": ("algorithms/fedpetuning",),
    "dpsda-fl": ("algorithms/dpsda",),
    "local-only": ("algorithms/local_only.py", "method", "server", "selection", "client"),
}


def source_hash(method: str, package: Path = PACKAGE) -> str | None:
    """A short sha256 over the method's source files (their paths within the package and contents),
    None for a method without listed sources."""
    parts = METHOD_SOURCES.get(method)
    if parts is None:
        return None
    files = sorted(
        f
        for part in parts
        for f in ([package / part] if part.endswith(".py") else (package / part).rglob("*.py"))
    )
    digest = hashlib.sha256()
    for f in files:
        if f.is_file():
            digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_commit(package: Path = PACKAGE) -> str | None:
    """``git rev-parse HEAD`` of the work tree holding the package (with ``+dirty`` when it has
    uncommitted changes), None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def code_version(method: str) -> dict[str, str | None]:
    """What the runner records beside a run: the commit and the method's source hash."""
    return {"commit": git_commit(), "source_hash": source_hash(method)}


def stale_reason(
    name: str, method: str, code: dict[str, Any] | None, listed: dict[str, str], current: str | None
) -> str | None:
    """Why a run's row is stale, or None: listed in ``stale.yaml``, or its method's source changed
    since the run (the recorded hash differs from ``current``, :func:`source_hash` of today's code)."""
    if name in listed:
        return listed[name]
    recorded = (code or {}).get("source_hash")
    if recorded and current and recorded != current:
        commit = (code or {}).get("commit") or "an unknown commit"
        return f"the {method} code changed since the run (ran at {commit})"
    return None


def listed_stale(folder: Path) -> dict[str, str]:
    """A suite folder's hand-kept list of stale runs (``stale.yaml``: ``run name: reason``)."""
    path = folder / STALE_FILE
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()}
