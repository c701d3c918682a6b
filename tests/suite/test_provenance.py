"""The code hash behind a report's stale marks: docstrings and comments do not count, code does, and a
legacy (bytes) hash is migrated only where git shows the recorded commit's files are what ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fedgrpo.suite.provenance import AST_PREFIX, migrated, source_hash, stale_reason

CODE = '''"""Module docstring."""


def reward(x):
    """Why it is so."""
    # a comment
    return x + 1
'''


def _package(root: Path, source: str = CODE) -> Path:
    package = root / "fedgrpo"
    for part in ("method", "client"):
        (package / part).mkdir(parents=True, exist_ok=True)
        (package / part / "rule.py").write_text(source)
    return package


def _commit(repo: Path) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    return head.stdout.strip()


def test_a_docstring_comment_or_layout_edit_keeps_the_hash_a_code_edit_changes_it(tmp_path: Path) -> None:
    before = source_hash("fedgrpo", _package(tmp_path / "a"))
    reworded = CODE.replace("Why it is so.", "Why, reworded.").replace("# a comment", "# another\n\n")
    assert source_hash("fedgrpo", _package(tmp_path / "b", reworded)) == before
    assert source_hash("fedgrpo", _package(tmp_path / "c", CODE.replace("x + 1", "x + 2"))) != before
    assert before is not None and before.startswith(AST_PREFIX)
    # the legacy hash of the bytes sees the docstring edit
    legacy = source_hash("fedgrpo", _package(tmp_path / "a"), tree=False)
    assert source_hash("fedgrpo", _package(tmp_path / "b", reworded), tree=False) != legacy


def test_a_legacy_hash_migrates_only_when_the_recorded_commit_holds_what_ran(tmp_path: Path) -> None:
    package = _package(tmp_path)
    commit = _commit(tmp_path)
    legacy = source_hash("fedgrpo", package, tree=False)
    code = migrated("fedgrpo", {"commit": commit, "source_hash": legacy}, package)
    assert code == {"commit": commit, "source_hash": source_hash("fedgrpo", package), "file_hash": legacy}
    # bytes that were never committed ran: the commit's files are not them, so nothing is claimed
    (package / "client" / "rule.py").write_text(CODE.replace("x + 1", "x - 1"))
    uncommitted = source_hash("fedgrpo", package, tree=False)
    assert migrated("fedgrpo", {"commit": commit, "source_hash": uncommitted}, package) is None
    assert migrated("fedgrpo", {"commit": commit + "+dirty", "source_hash": legacy}, package) is None
    assert migrated("fedgrpo", {"commit": "0" * 40, "source_hash": legacy}, package) is None
    assert migrated("fedgrpo", code, package) is None  # already a tree hash


def test_stale_compares_a_recorded_hash_by_its_own_kind() -> None:
    for tree in (True, False):
        today = {"source_hash": source_hash("zero-shot", tree=tree)}
        assert stale_reason("run", "zero-shot", today, {}) is None
    for other in ("0" * 16, AST_PREFIX + "0" * 16):
        reason = stale_reason("run", "zero-shot", {"commit": "abc", "source_hash": other}, {})
        assert reason == "the zero-shot code changed since the run (ran at abc)"
    assert stale_reason("run", "zero-shot", None, {"run": "listed"}) == "listed"
    assert stale_reason("run", "zero-shot", None, {}) is None  # no hash recorded, none listed
