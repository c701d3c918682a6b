"""Strict JSONL reading and atomic writing shared by every data file reader in fedgrpo.data.

Data files are written by hand or by other parties' tools, so every problem is reported as a
:class:`DataFileError` that names the file and, where one line is at fault, ``path:line``. An
organisation's errors may reach the server, so each also carries a ``public`` reason (the line and
the kind of fault, never a value from the file nor a local path): the only part put on the wire.
Nothing here knows about examples or domains (no import cycle with ``domains``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_LINE_BYTES",
    "DataFileError",
    "fault",
    "json_type",
    "optional_text",
    "read_jsonl_objects",
    "required_text",
]


class DataFileError(ValueError):
    """A data file (or data source row) that cannot be used as it is.

    A ``ValueError`` so existing ``except ValueError`` callers keep working, but a distinct class so
    that callers which wrap size errors (``partition``) let a bad file surface as itself.
    ``str(err)`` is the local detail (path, line, offending value); ``err.public`` is what may leave
    the organisation: the line and the kind of fault only.
    """

    def __init__(self, detail: str, public: str = "data file: cannot be used") -> None:
        super().__init__(detail)
        self.public = public


# A longer line is refused before it is decoded or parsed: no real question or answer is this long,
# and an organisation's ClientApp should not hold megabytes of one line in memory.
MAX_LINE_BYTES = 64 * 1024


def fault(where: str, line: int | None, kind: str, detail: str = "") -> DataFileError:
    """A fault at ``where`` (``path`` or ``path:line``, local): ``kind`` must hold no value from the
    file; ``detail`` (local only, default ``kind``) may."""
    public = f"data file line {line}: {kind}" if line else f"data file: {kind}"
    return DataFileError(f"{where}: {detail or kind}", public)


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
        raise fault(str(path), None, "is a directory, expected a JSONL file")
    if not path.exists():
        raise fault(str(path), None, "file not found")
    if not path.is_file():
        raise fault(str(path), None, "not a regular file")


def read_jsonl_objects(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; any other content is a DataFileError.

    Lines are split on ``\\n`` in bytes and decoded one by one, so a non-UTF-8 byte is reported with
    its line (``str.splitlines`` would also split on U+2028, which JSON allows inside strings). A
    UTF-8 byte-order mark on the first line is tolerated. A line over :data:`MAX_LINE_BYTES` is
    refused before it is decoded. A file with no object at all is refused: an empty data file is
    always a mistake (a wrong path, a failed export).
    """
    path = Path(path)
    _check_is_file(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 2), b""), 1):
                if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                    kind = f"line longer than the limit of {MAX_LINE_BYTES} bytes"
                    raise fault(f"{path}:{lineno}", lineno, kind)
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start} of the line)"
                    raise fault(f"{path}:{lineno}", lineno, "not UTF-8 text", bad) from None
                if not line.strip():
                    continue
                rows.append((lineno, _parse_object(path, lineno, line)))
    except OSError as exc:
        raise fault(str(path), None, f"cannot read: {exc.strerror or type(exc).__name__}") from exc
    if not rows:
        raise fault(str(path), None, "empty data file (no JSON object on any line)")
    return rows


def _parse_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:  # its msg is json's own wording, its column a position
        raise fault(where, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise fault(where, lineno, f"expected a JSON object per line, got {json_type(obj)}")
    return obj


def required_text(row: dict[str, Any], key: str, where: str, line: int | None = None) -> str:
    """A field that must be a string with some non-space content; ``where`` is ``path:line``,
    ``line`` the line number for the public reason. ``key`` is the reader's, never the file's."""
    if key not in row:
        raise fault(where, line, f"missing required field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise fault(where, line, f"field {key!r} must be a string, got {json_type(value)}")
    if not value.strip():
        raise fault(where, line, f"field {key!r} is empty")
    return value


def optional_text(row: dict[str, Any], key: str, where: str, line: int | None = None) -> str | None:
    """Like :func:`required_text` when the key is present; None when it is absent."""
    return required_text(row, key, where, line) if key in row else None
