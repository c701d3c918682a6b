"""Run a planned suite: each run in its own ``fedgrpo run`` process, resumable, a crash recorded.

A separate process per run keeps runs apart (memory, torch threads, seeds, a hard crash) and is exactly
what a user would type. A run whose folder holds ``results.json`` is done and skipped; one whose folder
exists otherwise is resumed (from its last complete checkpoint, if any). A run that fails is recorded in
``suite.json`` with the last line the command printed (its reason) and the suite goes on; the report is
written at the end either way. Each run's entry also records the code it ran (the commit and its
method's source hash, :mod:`fedgrpo.suite.provenance`), for the report's stale marks.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedgrpo.storage.atomic import write_json_atomic
from fedgrpo.suite.provenance import code_version
from fedgrpo.suite.spec import PlannedRun

log = logging.getLogger(__name__)

STATUS_FILE = "suite.json"


def read_status(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / STATUS_FILE
    return json.loads(path.read_text())["runs"] if path.exists() else {}


def failure_reason(stderr: str, returncode: int) -> str:
    """The command's own one-line reason (``fedgrpo: ...``), else its last line, else the exit code."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("fedgrpo:")]
    if starts:  # the reason may span lines (an exception's message): keep it all
        return " ".join(lines[starts[-1] :]).removeprefix("fedgrpo:").strip()
    return lines[-1] if lines else f"exited with code {returncode}"


def run_suite(planned: list[PlannedRun], folder: Path) -> dict[str, dict[str, Any]]:
    """Run every planned run not yet done; returns (and saves) each run's status."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    status = read_status(folder)
    for run in planned:
        out = run.config.output_dir
        entry = status.get(run.name, {})
        entry.update(method=run.config.method)
        if (out / "results.json").exists():
            log.info("suite: %s is done; skipped", run.name)
            entry.update(status="done", error=None)
            entry.setdefault("wall_seconds", None)
            status[run.name] = entry
            continue
        config_path = folder / "configs" / f"{run.name}.yaml"
        config_path.write_text(run.config.to_yaml())
        command = [sys.executable, "-m", "fedgrpo.cli", "run", str(config_path)]
        if out.exists():
            command.append("--resume")
        log.info("suite: running %s (%s)%s", run.name, run.config.method, " resumed" if out.exists() else "")
        entry.update(code=code_version(run.config.method))  # the report marks the row stale once it changes
        start = time.perf_counter()
        with (folder / "logs" / f"{run.name}.log").open("a") as log_file:
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.PIPE, text=True)
            try:
                _, stderr = proc.communicate()
            except KeyboardInterrupt:  # the run got the Ctrl-C too: let it save its checkpoint and stop
                _, stderr = proc.communicate()
            log_file.write(stderr)
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode == 0 and (out / "results.json").exists():
            entry.update(status="done", error=None, wall_seconds=seconds)
        else:
            error = failure_reason(stderr, proc.returncode)
            log.error("suite: %s failed after %.0f s: %s", run.name, seconds, error)
            entry.update(status="failed", error=error, wall_seconds=seconds)
        status[run.name] = entry
        write_json_atomic(folder / STATUS_FILE, {"runs": status})
        if proc.returncode == 130:  # the user pressed Ctrl-C: stop the suite too (resumable)
            raise KeyboardInterrupt
    write_json_atomic(folder / STATUS_FILE, {"runs": status})
    return status
