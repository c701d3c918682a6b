"""``fedgrpo org``: an organisation joins a federation with one command, and sees what it sent.

``fedgrpo org keys`` makes its key pair and says what to hand to the server's operator;
``fedgrpo org check FILE`` checks its file and its data locally (every bad line named, nothing sent);
``fedgrpo org start FILE`` does that, starts its model server (or uses the one it runs), waits until
it answers, starts ``flower-supernode`` with the node config the file implies and keeps both running
(Flower's SuperNode exits when it is refused, e.g. while the SuperLink still counts a killed node
online: it is restarted) until Ctrl-C or SIGTERM, which stop them; ``fedgrpo org log`` summarises its
transparency log (:mod:`fedgrpo.flower.reply_log`) per run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fedgrpo.console.org_config import OrgConfig
from fedgrpo.console.supervise import Child, Stop, say, stop_all, supervise, tool, tool_env
from fedgrpo.data import read_client_data
from fedgrpo.data.jsonl import DataFileError

__all__ = ["check_data", "check_org", "make_keys", "node_config_toml", "start_org", "wait_until_answers"]


def check_data(path: Path) -> tuple[int, list[str]]:
    """``(examples, errors)`` for an organisation's data file, read as its ClientApp reads it; every
    bad line is named (``path:line: fault``), not only the first. Nothing leaves the machine."""
    try:
        return len(read_client_data(path)), []
    except DataFileError as err:
        if not path.is_file():
            return 0, [str(err)]
        first = err
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / path.name  # the same name: the same default domain
        for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
            if not raw.strip():
                continue
            single.write_bytes(raw if lineno > 1 else raw.removeprefix(b"\xef\xbb\xbf"))
            try:
                read_client_data(single)
            except DataFileError as bad:
                errors.append(f"{path}:{lineno}: {str(bad).split(': ', 1)[-1]}")
    return 0, errors or [str(first)]


def check_org(cfg: OrgConfig) -> tuple[int, list[str]]:
    """``(examples, problems)``: the data file's errors, and the key or CA file that is missing."""
    examples, errors = check_data(cfg.data)
    files = (("key", cfg.key), ("ca", cfg.ca))
    return examples, errors + [f"{what} {p}: file not found" for what, p in files if p and not p.is_file()]


def _toml_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_config_toml(cfg: OrgConfig) -> Path:
    """The SuperNode's node config as a TOML file in the state folder (no shell quoting to get wrong)."""
    path = cfg.state / "node-config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'"{k}" = {_toml_value(v)}' for k, v in cfg.supernode_config().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_keys(folder: Path, stem: str = "supernode-key") -> str:
    """An EC key pair for the SuperNode, and the text telling what to hand over."""
    from fedgrpo.flower.certs import write_supernode_key

    private = Path(write_supernode_key(folder, stem))
    public = private.with_name(private.name + ".pub")
    return (
        f"private key: {private} (keep it here; the org file's `key:`)\n"
        f"hand to the server's operator: {public}\n"
        f"  {public.read_text().strip()}\n"
        "with the name you join under; they register it with\n"
        f"  fedgrpo superlink register {public.name} --name NAME\n"
        "and hand you back the SuperLink's address and its CA certificate (`superlink:` and `ca:`)"
    )


def wait_until_answers(url: str, model: str, seconds: float, server: Child | None = None) -> str | None:
    """None once the model at ``url`` answers one token; else why not (the server exited, or time)."""
    from fedgrpo.client.endpoint import EndpointError, EndpointModel

    endpoint = EndpointModel(url, model, timeout_s=60.0)
    deadline = time.monotonic() + seconds
    while True:
        try:
            endpoint.sample([{"role": "user", "content": "Say OK."}], 1, 0.0, 1, 0)
            return None
        except EndpointError as err:
            if server is not None and server.exited() is not None:
                return f"the model server exited with {server.exited()}:\n{server.tail()}"
            if time.monotonic() > deadline:
                return f"{url} did not answer for {model} within {seconds:.0f} s: {err}"
            time.sleep(1.0)


def start_org(cfg: OrgConfig) -> int:
    """Check, serve, join and supervise, until stopped. 2: the file or data is bad (nothing started)."""
    examples, errors = check_org(cfg)
    for line in errors:
        say(f"fedgrpo org: {line}")
    if errors:
        return 2
    say(f"data file {cfg.data}: {examples} examples, no errors")
    stop = Stop().on_signals()
    children: list[Child] = []
    m = cfg.model
    if m is not None and (m.serve or m.command):
        env = tool_env(HF_HUB_CACHE=os.environ.get("HF_HUB_CACHE") or str(cfg.state / "hub"))
        if m.serve:
            cmd = [tool("transformers"), "serve", m.serve, "--device", m.device, "--host", m.host]
            cmd += ["--port", str(m.port)]
        else:
            assert m.command is not None  # the config checked it
            cmd = [tool(m.command[0]), *m.command[1:]]
        children.append(Child("model server", cmd, cfg.state / "serve.log", env))
        children[0].start()
    if cfg.model is not None:
        say(f"waiting for {cfg.model.url} to answer for {cfg.model.served_name}")
        why = wait_until_answers(
            cfg.model.url, cfg.model.served_name, cfg.model.wait_s, next(iter(children), None)
        )
        if why is not None:
            say(f"fedgrpo org: {why}")
            stop_all(children)
            return 1
        say(f"{cfg.model.url} answers")
    cmd = [
        tool("flower-supernode"),
        "--superlink",
        cfg.superlink,
        "--auth-supernode-private-key",
        str(cfg.key),
    ]
    cmd += ["--root-certificates", str(cfg.ca)] if cfg.ca else ["--insecure"]
    cmd += ["--port", str(cfg.port), "--node-config", str(node_config_toml(cfg))]
    supernode = Child("SuperNode", cmd, cfg.state / "supernode.log")
    children.append(supernode)
    supernode.start()
    say(f"joining {cfg.superlink}; every reply sent is logged in {cfg.reply_log} (`fedgrpo org log`)")
    return supervise(children, stop)
