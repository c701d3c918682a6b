"""A real Flower deployment on loopback for tests: SuperLink with TLS and SuperNode authentication,
one SuperNode per organisation (its key registered under its name, pointed at its own data file),
the server with its own files; all as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class Deployment:
    root: Path
    port: int
    certs: Path
    data: Path
    env: dict[str, str]
    superlink: subprocess.Popen | None = None
    supernodes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list = field(default_factory=list)
    spawned: list[subprocess.Popen] = field(default_factory=list)  # every process started, restarts too

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("w")
        self.logs.append(log)
        # its own process group: the ServerApp a SuperLink starts and the ClientApps a SuperNode
        # starts outlive their parent's SIGTERM (or SIGKILL), and stop() must end them too
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env or self.env, start_new_session=True
        )
        self.spawned.append(proc)
        return proc

    def start_superlink(self) -> None:
        c = self.certs
        self.superlink = self._spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                f"--ssl-ca-certfile={c / 'ca.crt'}",
                f"--ssl-certfile={c / 'server.pem'}",
                f"--ssl-keyfile={c / 'server.key'}",
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
        )
        wait_for_port(self.port, self.superlink)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "flwr"), *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def register(self, key: str, name: str | None = None) -> subprocess.CompletedProcess:
        named = ["--name", name] if name else []
        return self.flwr("supernode", "register", str(self.certs / f"{key}.pub"), "fedgrpo", *named)

    def start_supernode(
        self, client: str, key: str, port: int | None = None, node_config: str = "", label: str = ""
    ) -> subprocess.Popen:
        """A SuperNode for ``client``'s data file; ``node_config``: further ``key=value`` entries;
        ``label``: its name here when it is not ``client``'s own node (an impostor's)."""
        proc = self._spawn(
            f"supernode-{label or client}",
            [
                str(BIN / "flower-supernode"),
                f"--root-certificates={self.certs / 'ca.crt'}",
                f"--superlink={self.address}",
                f"--auth-supernode-private-key={self.certs / key}",
                f"--node-config=data-file='{self.data / client / 'data.jsonl'}' {node_config}".strip(),
                f"--port={port or free_port()}",
                "--max-retries=3",
            ],
        )
        self.supernodes[label or client] = proc
        return proc

    def server_overrides(self) -> list[str]:
        """The server's side of ``fedgrpo run``: its own files, the SuperLink, the CA."""
        files = self.data / "server"
        return [
            "federation.transport=flower-deployment",
            f"flower.superlink={self.address}",
            f"flower.root_certificates={self.certs / 'ca.crt'}",
            f"server.questions={files / 'questions.jsonl'}",
            f"server.auxiliary={files / 'auxiliary.jsonl'}",
            f"server.heldout={files / 'heldout.jsonl'}",
        ]

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the SuperNodes, then the SuperLink; then SIGKILL to whatever is left of their
        process groups (a ServerApp or ClientApp left behind would load the next test's CPUs)."""
        for proc in [*self.supernodes.values(), self.superlink]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.supernodes.values(), self.superlink]:
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for proc in self.spawned:
            with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing left behind
                os.killpg(proc.pid, signal.SIGKILL)
            proc.poll()
        for log in self.logs:
            log.close()


def make_deployment(root: Path, supernode_keys: int = 4) -> Deployment:
    """Certificates, keys and every party's files for the smoke preset, and a FLWR_HOME for the CLI."""
    from fedgrpo.config import load_config
    from fedgrpo.flower.certs import make_certificates
    from fedgrpo.flower.launch import flwr_home
    from fedgrpo.simulation.data import write_example_files

    certs, data = root / "certs", root / "data"
    make_certificates(certs, ["127.0.0.1", "localhost"], supernode_keys)
    write_example_files(load_config("smoke"), data)
    port = free_port()
    cfg = load_config(
        "smoke",
        [
            f"flower.superlink=127.0.0.1:{port}",
            f"flower.root_certificates={certs / 'ca.crt'}",
        ],
    )
    home = flwr_home(cfg, root / "flwr-home")
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return Deployment(root, port, certs, data, env)
