"""What an organisation's error may tell the server: the kind of fault, never a value or a local path.

Errors that leave an organisation (a failed profile, an error reply) travel to the server and its
``run.log``. A data file's error carries a public reason (line and kind, :class:`DataFileError`);
any other error's text has this machine's paths (the node config's files, the working and home
folders) replaced. The organisation's own log keeps the full detail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedgrpo.data import DataFileError

__all__ = ["LOCAL", "public_error"]

LOCAL = "<local path>"
_FILE_KEYS = ("data-file", "privacy-state")  # always local paths
_MAYBE_LOCAL_KEYS = ("model", "adapter")  # a hub id, or a local folder


def _local_paths(node: dict[str, Any]) -> list[str]:
    """This machine's paths an error could name, longest first (a folder never hides a file's name)."""
    found = {str(Path.cwd()), str(Path.home())}
    for key in (*_FILE_KEYS, *_MAYBE_LOCAL_KEYS):
        if key not in node:
            continue
        given = str(node[key])
        path = Path(given).expanduser()
        if key in _MAYBE_LOCAL_KEYS and not path.exists():
            continue
        found |= {given, str(path), str(path.resolve()), str(path.parent), str(path.resolve().parent)}
    return sorted((p for p in found if len(p) > 1), key=len, reverse=True)


def public_error(err: BaseException, node: dict[str, Any]) -> str:
    """``Type: reason`` for the server: a data file's public reason, else the text without local paths."""
    text = err.public if isinstance(err, DataFileError) else str(err)
    for path in _local_paths(node):
        text = text.replace(path, LOCAL)
    return f"{type(err).__name__}: {text}"
