"""An organisation's transparency log: every reply its ClientApp sent, appended where it alone reads.

One JSON line per reply, in ``reply-log`` (node config; default ``<data-file>.replies.jsonl``, mode
0600): the run (the config's ``name`` and Flower's run id), the time, what was asked (the kind, the
request id, item and candidate counts, and a SHA-256 prefix of each question: enough to match a
question one holds, not the text), the reply's bytes exactly as they left (base64 of the protocol
payload, or the profile record as JSON) and the privacy spent so far. The organisation reads it with
``fedgrpo org log`` (:func:`summarise`). Flower 1.41 starts a ClientApp process per message, so each
line is written with one locked ``write`` to a file opened for appending.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedgrpo.protocol import CompetenceRequest, RewardRequest
from fedgrpo.protocol import Message as ProtocolMessage

__all__ = ["LOG_KEY", "append", "asked", "log_path", "read_log", "sent_bytes", "summarise"]

LOG_KEY = "reply-log"  # the node config key naming the log file


def log_path(node: dict[str, Any]) -> Path | None:
    """The log a node's ClientApp appends to: ``reply-log``, else next to its data file; none when
    the node names no data file (a simulation's virtual client)."""
    if LOG_KEY in node:
        return Path(str(node[LOG_KEY])).expanduser()
    if "data-file" in node:
        data = Path(str(node["data-file"])).expanduser()
        return data.with_name(data.name + ".replies.jsonl")
    return None


def question_hash(question: str) -> str:
    """A short, stable fingerprint of a question: an organisation can match it against its own file."""
    return hashlib.sha256(question.encode()).hexdigest()[:16]


def asked(request: ProtocolMessage | None) -> dict[str, Any]:
    """What a request asked, without its text: kind, id, counts and question fingerprints."""
    if isinstance(request, RewardRequest | CompetenceRequest):
        out: dict[str, Any] = {
            "kind": request.kind,
            "request_id": request.request_id,
            "items": len(request.items),
        }
        if isinstance(request, RewardRequest):
            out["candidates"] = sum(len(item.candidates) for item in request.items)
        out["questions"] = [question_hash(item.question) for item in request.items]
        return out
    return {"kind": "unreadable"}  # refused before it could be decoded


def append(
    path: Path, run: str, flower_run: int, asked_for: dict[str, Any], sent: bytes | dict, spent: Any
) -> None:
    """One line for one reply; ``sent`` is the protocol payload as it left, or a profile record."""
    entry = {
        "run": run,
        "flower_run": flower_run,
        "time": round(time.time(), 3),
        "asked": asked_for,
        "reply_bytes": len(sent) if isinstance(sent, bytes) else None,
        "reply_b64": base64.b64encode(sent).decode() if isinstance(sent, bytes) else None,
        "profile": sent if isinstance(sent, dict) else None,
        "privacy_spent": list(spent) if spent else None,
    }
    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every entry, in the order written; a line that is not an entry names its line."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a log entry ({err.msg})") from None
    return entries


def sent_bytes(entry: dict[str, Any]) -> bytes | None:
    """The payload an entry records as sent (None for a profile)."""
    return base64.b64decode(entry["reply_b64"]) if entry.get("reply_b64") is not None else None


def summarise(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: replies by kind, items and candidates asked, distinct questions, bytes sent, the
    privacy spent at the end, first and last time."""
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for e in entries:
        key = (str(e.get("run")), int(e.get("flower_run") or 0))
        row = runs.setdefault(
            key,
            {
                "run": key[0],
                "flower_run": key[1],
                "replies": {},
                "items": 0,
                "candidates": 0,
                "questions": set(),
                "bytes_sent": 0,
                "privacy_spent": None,
                "first": e["time"],
                "last": e["time"],
            },
        )
        a = e.get("asked") or {}
        kind = "profile" if e.get("profile") is not None else str(a.get("kind"))
        row["replies"][kind] = row["replies"].get(kind, 0) + 1
        row["items"] += int(a.get("items", 0))
        row["candidates"] += int(a.get("candidates", 0))
        row["questions"].update(a.get("questions", []))
        row["bytes_sent"] += int(e.get("reply_bytes") or 0)
        row["privacy_spent"] = e.get("privacy_spent") or row["privacy_spent"]
        row["first"], row["last"] = min(row["first"], e["time"]), max(row["last"], e["time"])
    return [{**r, "questions": len(r["questions"])} for r in runs.values()]
