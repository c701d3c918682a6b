"""Atomic writes: a reader (or a resumed run) never sees half a file."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temp_next_to(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that wants a path (``torch.save``); on
    success it replaces ``path`` in one rename, on failure it is removed."""
    path = Path(path)
    tmp = _temp_next_to(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, private: bool = False) -> None:
    """Write through a temp file in the same folder, flushed to disk, then ``os.replace``.

    ``private=True`` makes the file readable and writable by its owner only (0o600) from the moment
    it exists, so labelled data never sits world-readable even briefly; otherwise the umask applies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_next_to(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            if private:
                os.fchmod(fh.fileno(), 0o600)  # whatever the umask made of the mode
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))
