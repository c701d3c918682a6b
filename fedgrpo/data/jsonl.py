"""Strict JSONL reading and atomic writing shared by every data file reader in fedgrpo.data.

Data files are written by hand or by other parties' tools, so every problem is reported as a
:class:`DataFileError` that names the file and, where one line is at fault, ``path:line``.
Nothing here knows about examples or domains (no import cycle with ``domains``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "DataFileError",
    "json_type",
    "optional_text",
    "read_jsonl_objects",
    "required_text",
]


class DataFileError(ValueError):
    """A data file (or data source row) that cannot be used as it is.

    A ``ValueError`` so existing ``except ValueError`` callers keep working, but a distinct class so
    that callers which wrap size errors (``partition``) let a bad file surface as itself.
    """


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages that talk about the file, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, expected a JSONL file")
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")


def read_jsonl_objects(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; any other content is a DataFileError.

    Lines are split on ``\\n`` in bytes and decoded one by one, so a non-UTF-8 byte is reported with
    its line (``str.splitlines`` would also split on U+2028, which JSON allows inside strings). A
    UTF-8 byte-order mark on the first line is tolerated. A file with no object at all is refused:
    an empty data file is always a mistake (a wrong path, a failed export).
    """
    path = Path(path)
    _check_is_file(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = f"byte {raw[exc.start]:#04x} at offset {exc.start} of the line"
                    raise DataFileError(f"{path}:{lineno}: not UTF-8 text ({bad})") from None
                if not line.strip():
                    continue
                rows.append((lineno, _parse_object(path, lineno, line)))
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not rows:
        raise DataFileError(f"{path}: empty data file (no JSON object on any line)")
    return rows


def _parse_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataFileError(f"{path}:{lineno}: expected a JSON object per line, got {json_type(obj)}")
    return obj


def required_text(row: dict[str, Any], key: str, where: str) -> str:
    """A field that must be a string with some non-space content; ``where`` is ``path:line``."""
    if key not in row:
        raise DataFileError(f"{where}: missing required field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise DataFileError(f"{where}: field {key!r} must be a string, got {json_type(value)}")
    if not value.strip():
        raise DataFileError(f"{where}: field {key!r} is empty")
    return value


def optional_text(row: dict[str, Any], key: str, where: str) -> str | None:
    """Like :func:`required_text` when the key is present; None when it is absent."""
    return required_text(row, key, where) if key in row else None
