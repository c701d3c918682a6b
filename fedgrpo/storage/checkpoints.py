"""Checkpoints that are either complete or ignored.

The Hugging Face Trainer writes ``checkpoint-N`` folders in place, so a kill mid-save leaves a torn
folder. FedGRPO writes its own state and then a ``COMPLETE`` marker last; resume uses only marked
folders and removes the others.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

STATE_FILE = "fedgrpo_state.json"
COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Checkpoints that finished writing, oldest first. A folder without the marker is a torn write."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            m = CHECKPOINT_RE.match(child.name)
            if m and (child / COMPLETE_MARKER).exists():
                found.append((int(m.group(1)), child))
    return sorted(found)


def last_checkpoint(folder: Path) -> Path | None:
    done = complete_checkpoints(folder)
    return done[-1][1] if done else None


def remove_torn_checkpoints(folder: Path) -> list[Path]:
    removed = []
    if folder.is_dir():
        for child in folder.iterdir():
            if CHECKPOINT_RE.match(child.name) and not (child / COMPLETE_MARKER).exists():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed
