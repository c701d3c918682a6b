"""Child processes kept running until the console is stopped: logged to a file each, restarted with a
growing pause when they exit, all stopped when the console gets Ctrl-C or SIGTERM. They stay in the
console's process group (a Ctrl-C in its terminal, or a signal to its group, reaches them too) and, on
Linux, get SIGTERM when the console dies, so none outlives it, even a console killed with SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Child", "Stop", "say", "stop_all", "supervise", "tool", "tool_env"]

STOP_GRACE_S = 15.0  # a SuperNode told to stop tells the SuperLink it leaves: give it time
STEADY_S = 60.0  # a child that ran this long before it exited is restarted at once


def tool(name: str) -> str:
    """A console script from this environment (where fedgrpo runs), else from PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for a child: Flower's processes start more of its scripts (``flwr-clientapp``,
    ``flower-superexec``) by name, so this environment's scripts come first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def say(message: str) -> None:
    """One line of the console's own log, on stderr, with the time."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    """One supervised process: its command, its log file (appended to), its restarts."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=tool_env)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    pause_s: float = 2.0
    restart: bool = True  # False: its exit ends the supervision (a SuperLink's state is in memory)
    descendants: list[Any] = field(default_factory=list)  # what it had started when told to stop

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, preexec_fn=_die_with_parent
            )
        self.started = time.monotonic()
        say(f"{self.name} started (pid {self.proc.pid}; log {self.log})")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.descendants = _descendants(self.proc.pid)
            self.proc.terminate()

    def wait_stopped(self, deadline: float) -> None:
        """Wait until it and the processes it started have exited (SIGKILL at ``deadline``): a
        SuperLink's ``flwr-serverapp`` outlives a SuperLink stopped mid-run otherwise."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        _stop_processes(self.descendants, deadline)
        say(f"{self.name} stopped")


def _descendants(pid: int) -> list[Any]:
    """Every live process ``pid`` started, and theirs (psutil: no portable call in the stdlib)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_processes(processes: list[Any], deadline: float) -> None:
    """SIGTERM to those still running, SIGKILL to any still running at ``deadline``."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, left = psutil.wait_procs(alive, timeout=max(deadline - time.monotonic(), 0.1))
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _die_with_parent() -> None:
    """In the child, before it runs: ask Linux for SIGTERM when the console exits (PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class Stop:
    """Set by SIGINT/SIGTERM: the console then stops its children and exits."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def on_signals(self) -> Stop:
        """Set on SIGINT and SIGTERM (the console's own process: its main thread)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)
        return self

    def _set(self, signum: int, _frame: object) -> None:
        say(f"{signal.Signals(signum).name}: stopping")
        self.event.set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)


def supervise(children: list[Child], stop: Stop) -> int:
    """Keep ``children`` running (each restarted after a pause that doubles up to a minute while it
    keeps failing fast) until ``stop``; then stop them in reverse order. 0: stopped on request; else
    the exit status of a child that is not restarted."""
    try:
        while not stop.wait(1.0):
            for child in children:
                code = child.exited()
                if code is None:
                    continue
                ran = time.monotonic() - child.started
                if not child.restart:
                    say(f"{child.name} exited with {code} after {ran:.0f} s:\n{child.tail()}")
                    return code or 1
                pause = 2.0 if ran > STEADY_S else child.pause_s
                child.pause_s = min(pause * 2, 60.0)  # the next pause, if it fails fast again
                say(f"{child.name} exited with {code} after {ran:.0f} s; restarting in {pause:.0f} s")
                if child.tail():
                    say(f"{child.name}'s last lines:\n{child.tail()}")
                if stop.wait(pause):
                    break
                child.restarts += 1
                child.start()
    finally:
        stop_all(children)
    return 0


def stop_all(children: list[Child]) -> None:
    """SIGTERM to every child at once (a SuperNode then tells the SuperLink it leaves), SIGKILL to any
    still running after STOP_GRACE_S."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        child.wait_stopped(deadline)
