"""Which code a suite's run ran, so the report can mark a row whose method has changed since (stale).

The runner records, each time it starts a run, the git commit (when the package sits in a git work
tree) and a hash of the method's own source files (works outside git too: an installed package). A
stale row is one whose recorded hash differs from the current code's. Records made before this was
recorded carry no hash; for them a suite folder may list stale runs by hand in ``stale.yaml``
(``run name: reason``).

The hash (``ast:...``) is of each file's syntax tree without its docstrings, unparsed, so an edit to a
docstring or a comment, or a reformat, keeps the rows; older records hold a hash of the files' bytes
(bare hex), which is still compared as such. :func:`migrated` turns one into a tree hash by reading
the recorded commit's files from git, once it has checked that they are the bytes that ran
(``fedgrpo.suite.record.migrate_hashes`` does a suite folder).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PACKAGE = Path(__file__).resolve().parent.parent  # the fedgrpo package
STALE_FILE = "stale.yaml"
AST_PREFIX = "ast:"  # a tree hash; a bare hex hash is the legacy hash of the files' bytes

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


def _is_method_file(relpath: str, parts: tuple[str, ...]) -> bool:
    return relpath.endswith(".py") and any(
        relpath == part if part.endswith(".py") else relpath.startswith(part + "/") for part in parts
    )


def method_files(method: str, package: Path = PACKAGE) -> dict[str, bytes] | None:
    """The method's source files as they are on disk (path within the package -> bytes), None for a
    method without listed sources."""
    parts = METHOD_SOURCES.get(method)
    if parts is None:
        return None
    found = ((f.relative_to(package).as_posix(), f) for f in package.rglob("*.py"))
    return {rel: f.read_bytes() for rel, f in found if _is_method_file(rel, parts)}


def without_docstrings(source: bytes) -> bytes:
    """The code as Python reads it: the syntax tree, less every module, class and function docstring,
    unparsed (so comments and layout are gone too). A file that does not parse is kept as it is."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    for node in ast.walk(tree):
        if not isinstance(node, documented) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree).encode()


def files_hash(files: Mapping[str, bytes], tree: bool = True) -> str:
    """A short sha256 over the files (their paths within the package and contents): of their syntax
    trees without docstrings (``ast:`` prefix) or, ``tree=False``, of their bytes (the legacy hash)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        body = without_docstrings(files[path]) if tree else files[path]
        digest.update(path.encode() + b"\0" + body + b"\0")
    return (AST_PREFIX if tree else "") + digest.hexdigest()[:16]


def source_hash(method: str, package: Path = PACKAGE, tree: bool = True) -> str | None:
    """The hash of the method's source as it is now (:func:`files_hash`), None for a method without
    listed sources."""
    files = method_files(method, package)
    return None if files is None else files_hash(files, tree)


@functools.cache
def current_hash(method: str, tree: bool) -> str | None:
    """:func:`source_hash` of today's code, read once per process (a report asks for it per row)."""
    return source_hash(method, tree=tree)


def same_code(recorded: str, method: str) -> bool:
    """Whether a recorded hash is today's code's, by the recorded hash's own kind."""
    return recorded == current_hash(method, recorded.startswith(AST_PREFIX))


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


def _git(args: list[str], repo: Path, data: bytes | None = None) -> bytes:
    done = subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, timeout=60, check=True)
    return done.stdout


def files_at_commit(method: str, commit: str, package: Path = PACKAGE) -> dict[str, bytes] | None:
    """The method's source files as they were at a git commit of the repository holding the package
    (path within the package -> bytes), None outside git, for an unknown commit or method."""
    parts = METHOD_SOURCES.get(method)
    if parts is None:
        return None
    prefix = package.name + "/"
    try:
        listing = _git(["ls-tree", "-r", commit, "--", prefix], package.parent).decode()
        wanted = []  # (blob id, path within the package); two files may share a blob
        for line in listing.splitlines():
            meta, path = line.split("\t", 1)
            if meta.split()[1] == "blob" and _is_method_file(path.removeprefix(prefix), parts):
                wanted.append((meta.split()[2], path.removeprefix(prefix)))
        # one `git cat-file --batch` for all blobs: "<id> blob <size>\n<bytes>\n" per blob, in order
        ids = "".join(f"{blob}\n" for blob, _ in wanted).encode()
        out, files = _git(["cat-file", "--batch"], package.parent, ids), {}
        for blob, path in wanted:
            header, out = out.split(b"\n", 1)
            if header.split()[0].decode() != blob:
                raise ValueError(f"git cat-file answered {header!r} for {blob}")
            size = int(header.split()[2])
            files[path], out = out[:size], out[size + 1 :]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return files


def migrated(method: str, code: dict[str, Any] | None, package: Path = PACKAGE) -> dict[str, Any] | None:
    """A record's ``code`` entry with its legacy bytes hash turned into a tree hash, or None where it
    cannot be: no legacy hash, a dirty or unknown commit, or files at that commit that hash otherwise
    than what was recorded (then they are not what ran). The legacy hash is kept as ``file_hash``."""
    recorded, commit = (code or {}).get("source_hash"), (code or {}).get("commit")
    if not recorded or recorded.startswith(AST_PREFIX) or not commit or commit.endswith("+dirty"):
        return None
    files = files_at_commit(method, commit, package)
    if files is None or files_hash(files, tree=False) != recorded:
        return None
    return {**(code or {}), "source_hash": files_hash(files), "file_hash": recorded}


def stale_reason(name: str, method: str, code: dict[str, Any] | None, listed: dict[str, str]) -> str | None:
    """Why a run's row is stale, or None: listed in ``stale.yaml``, or its method's source changed
    since the run (the recorded hash is not today's code's, :func:`same_code`)."""
    if name in listed:
        return listed[name]
    recorded = (code or {}).get("source_hash")
    if recorded and not same_code(recorded, method):
        commit = (code or {}).get("commit") or "an unknown commit"
        return f"the {method} code changed since the run (ran at {commit})"
    return None


def listed_stale(folder: Path) -> dict[str, str]:
    """A suite folder's hand-kept list of stale runs (``stale.yaml``: ``run name: reason``)."""
    path = folder / STALE_FILE
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()}
