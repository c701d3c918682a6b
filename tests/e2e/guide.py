"""Runs docs/deployment.md's commands as written: each ```bash block whose first line is ``# [party]``
runs in that party's own folder, with that folder as its home directory (standing in for a separate
machine), in order. Background processes a block starts (SuperLink, SuperNodes, model servers) stay
in the block's process group and are stopped at the end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GUIDE = Path(__file__).parents[2] / "docs" / "deployment.md"
BLOCK_RE = re.compile(r"```bash\n# \[([\w-]+)\]\n(.*?)```", re.DOTALL)


def guide_blocks(path: Path = GUIDE) -> list[tuple[str, str]]:
    """(party, commands) for every runnable block of the guide, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK_RE.finditer(path.read_text())]


@dataclass
class Machines:
    """One folder (and home directory) per party; every process group started, for cleanup."""

    root: Path
    groups: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def folder(self, party: str) -> Path:
        path = self.root / party
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, party: str) -> dict[str, str]:
        home = self.folder(party)
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "PYTEST_"))}
        env.update(HOME=str(home), PATH=f"{bin_dir}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1")
        return env

    def sh(self, party: str, commands: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``commands`` with bash -e in ``party``'s folder; raises with the output when it fails."""
        proc = subprocess.Popen(
            ["bash", "-e", "-c", commands],
            cwd=self.folder(party),
            env=self.env(party),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its background children stay in this group: stopped at the end
        )
        self.groups.append(proc.pid)
        start = time.monotonic()
        out, _ = proc.communicate(timeout=timeout)
        self.log.append(f"[{party}] ({time.monotonic() - start:.1f} s) $ {commands}\n{out}")
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
        if proc.returncode:
            raise AssertionError(f"[{party}] failed ({proc.returncode}):\n{commands}\n{out[-4000:]}")
        return result

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            time.sleep(2 if sig == signal.SIGTERM else 0)
