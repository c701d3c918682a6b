"""``fedgrpo superlink``: the server operator's side of a deployment.

``start`` runs ``flower-superlink`` with its certificates and SuperNode authentication, logged to
``superlink.log`` in the server's folder, until Ctrl-C or SIGTERM, and writes the ``flwr``
connection ``fedgrpo`` to ``flwr-home/config.toml`` there; ``register KEY.pub --name NAME`` registers
an organisation's key; ``orgs`` lists the registered organisations by name with their state (Flower's
``flwr supernode list`` shows no names: they are read from the SuperLink's Control API, and why a
node was refused from a run's ``run.log``). ``orgs`` reads the connection ``start`` wrote, and
nothing else: in a folder without one it fails and writes nothing (Flower's CLI would write a default
config there).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from fedgrpo.console.supervise import Child, Stop, say, supervise, tool, tool_env

__all__ = ["NoSuperLink", "flwr_home", "list_orgs", "register", "start_superlink", "wait_until_up"]

CERT_FILES = ("ca.crt", "server.pem", "server.key")
_REFUSED = re.compile(r"node (\d+) refused as a client: (.*)$")
_JOINED = re.compile(r"client (\S+) (joined|rejoined|left) \(")
NO_NAME = "(no name)"


class NoSuperLink(RuntimeError):
    """No SuperLink to ask: none was started from this folder, or none answers at its address."""


def flwr_home(folder: Path) -> Path:
    return folder.resolve() / "flwr-home"


def _connection(folder: Path) -> Path:
    """The FLWR_HOME holding ``start``'s connection; without it Flower's CLI would write a default
    config into that folder and fail anyway, so nothing is called."""
    path = flwr_home(folder) / "config.toml"
    if not path.is_file():
        raise NoSuperLink(
            f"no SuperLink connection in {path}: `fedgrpo superlink start` writes it in the folder it "
            "runs from; run this there or give that folder with --dir"
        )
    return path.parent


def write_connection(folder: Path, address: str, ca: Path) -> Path:
    """The ``flwr`` CLI's connection ``fedgrpo`` in the server folder's own FLWR_HOME."""
    home = flwr_home(folder)
    home.mkdir(parents=True, exist_ok=True)
    text = f'[superlink]\ndefault = "fedgrpo"\n\n[superlink.fedgrpo]\naddress = "{address}"\n'
    (home / "config.toml").write_text(text + f'root-certificates = "{ca.resolve()}"\n')
    return home


def start_superlink(folder: Path, certs: Path, host: str, port: int) -> int:
    """Run the SuperLink until stopped; 2 when a certificate file is missing (nothing started)."""
    missing = [str(certs / f) for f in CERT_FILES if not (certs / f).is_file()]
    if missing:
        say(f"fedgrpo superlink: missing {', '.join(missing)} (a test CA: `fedgrpo flower-certs {certs}`)")
        return 2
    home = write_connection(folder, f"{host}:{port}", certs / "ca.crt")
    c = certs.resolve()
    cmd = [
        tool("flower-superlink"),
        "--ssl-ca-certfile",
        str(c / "ca.crt"),
        "--ssl-certfile",
        str(c / "server.pem"),
    ]
    cmd += ["--ssl-keyfile", str(c / "server.key"), "--enable-supernode-auth"]
    cmd += ["--disable-runtime-dependency-installation", "--host", host, "--port", str(port)]
    stop = Stop().on_signals()
    child = Child("SuperLink", cmd, folder / "superlink.log", restart=False)
    child.start()
    say(f"SuperLink on {host}:{port}; flwr commands: FLWR_HOME={home} (`fedgrpo superlink orgs` uses it)")
    return supervise([child], stop)


def _flwr(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = tool_env(FLWR_HOME=str(_connection(folder)))
    return subprocess.run([tool("flwr"), *args], env=env, capture_output=True, text=True, check=False)


def register(folder: Path, key: Path, name: str) -> subprocess.CompletedProcess:
    """``flwr supernode register KEY --name NAME`` against this folder's SuperLink."""
    return _flwr(folder, "supernode", "register", str(key), "--name", name)


def serving(rows: list[dict[str, Any]]) -> int:
    """Organisations that can serve: online under a registered name, not refused in the run listed;
    a name counts once (a second node under it is refused)."""
    return len(
        {
            r["name"]
            for r in rows
            if r["status"] == "online" and r["name"] != NO_NAME and not r["run"].startswith("refused")
        }
    )


def wait_until_up(folder: Path, seconds: float, online: int = 0, run_dir: Path | None = None) -> str:
    """Why not, or an empty string once, within ``seconds``, the SuperLink answers and ``online``
    organisations can serve (:func:`serving`). A connection ``start`` has yet to write is waited for."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if (n := serving(list_orgs(folder, run_dir))) >= online:
                return ""
            why = f"{n} of {online} organisation(s) online under their registered names"
        except NoSuperLink as err:
            why = str(err)
        if time.monotonic() > deadline:
            return why
        time.sleep(1.0)


def run_log_states(run_log: Path) -> tuple[dict[str, str], dict[int, str]]:
    """From a run's ``run.log``: each client's last event (joined, rejoined, left), and each refused
    node's reason, as FedGRPO's transport logged them."""
    events: dict[str, str] = {}
    refused: dict[int, str] = {}
    for line in run_log.read_text(errors="replace").splitlines():
        if m := _REFUSED.search(line):
            refused[int(m.group(1))] = m.group(2)
        elif m := _JOINED.search(line):
            events[m.group(1)] = m.group(2)
    return events, refused


def list_orgs(folder: Path, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every registered SuperNode: its name, Flower's state and times, and (with a run folder) what
    FedGRPO made of it in that run. Reads the SuperLink's Control API, as ``flwr supernode list``."""
    import httpx
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import ListNodesRequest  # type: ignore[attr-defined]

    saved = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(_connection(folder))  # where Flower reads its connections
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Flower prints which connection it uses
            connection = read_superlink_connection("fedgrpo")
            client = init_http_client_from_connection(connection)
    finally:
        if saved is None:
            del os.environ["FLWR_HOME"]
        else:
            os.environ["FLWR_HOME"] = saved
    try:
        nodes = client.ListNodes(ListNodesRequest()).nodes_info
    except httpx.TransportError as err:  # after Flower's own retries
        raise NoSuperLink(f"no SuperLink answers at {connection.address}: {err}") from err
    finally:
        client.close()
    events, refused = run_log_states(run_dir / "run.log") if run_dir else ({}, {})
    rows = []
    for n in sorted(nodes, key=lambda n: n.registered_at):
        if n.status == "unregistered":
            continue
        name = n.name if n.HasField("name") else ""
        in_run = f"refused: {refused[n.node_id]}" if n.node_id in refused else events.get(name, "")
        since = n.last_activated_at if n.status == "online" else n.last_deactivated_at
        rows.append(
            {
                "name": name or NO_NAME,
                "node": n.node_id,
                "status": n.status,
                "since": since or "never",
                "registered": n.registered_at,
                "run": in_run,
            }
        )
    return rows
