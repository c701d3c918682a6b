"""The ``fedgrpo org ...`` and ``fedgrpo superlink ...`` commands (registered by :mod:`fedgrpo.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedgrpo.config import ConfigError

COMMANDS = {
    "org": "an organisation: make its keys, check its data, join a federation, read what it sent",
    "superlink": "the server: start the SuperLink, register organisations, list them by name and state",
}


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"fedgrpo {command}", description=COMMANDS[command])
    sub = parser.add_subparsers(dest="action", required=True)
    if command == "org":
        keys = sub.add_parser("keys", help="make the SuperNode key pair; print what to hand to the server")
        keys.add_argument("dir", nargs="?", default=".")
        for action, text in (("check", "check the file and the data file; start nothing"), ("start", "join")):
            sub.add_parser(action, help=text).add_argument("file", help="the organisation's YAML file")
        log = sub.add_parser("log", help="summarise the transparency log per run: what left, privacy spent")
        log.add_argument("file", help="the organisation's YAML file, or a replies.jsonl")
        log.add_argument("--json", action="store_true", help="print JSON")
        demo = sub.add_parser("demo-model", help="serve the demo's stand-in expert (not a language model)")
        demo.add_argument("--host", default="127.0.0.1")
        demo.add_argument("--port", type=int, default=8000)
        return parser
    start = sub.add_parser("start", help="run the SuperLink (TLS, SuperNode authentication) until stopped")
    start.add_argument("--certs", default="certs", help="folder with ca.crt, server.pem, server.key")
    start.add_argument("--host", default="0.0.0.0")
    start.add_argument("--port", type=int, default=9093)
    reg = sub.add_parser("register", help="register an organisation's public key under its name")
    reg.add_argument("key")
    reg.add_argument("--name", required=True)
    orgs = sub.add_parser("orgs", help="registered organisations: name, state, since when, in a run")
    orgs.add_argument("--run", help="a run folder: also what the run made of each (joined, refused: why)")
    orgs.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the SuperLink to answer")
    orgs.add_argument(
        "--online",
        type=int,
        default=0,
        help="with --wait: until this many are online by name (with --run: not refused)",
    )
    orgs.add_argument("--json", action="store_true", help="print JSON")
    for p in (start, reg, orgs):
        p.add_argument("--dir", default=".", help="the server's folder (default: here)")
    return parser


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):  # privacy spent: (epsilon, delta)
        return "epsilon {:.3g}, delta {:.3g}".format(*value)
    return "-" if value is None else str(value)


def _table(rows: list[dict], keys: list[str]) -> str:
    cells = [keys, *[[_cell(r[k]) for k in keys] for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(keys))).rstrip() for c in cells)


def _org(args: argparse.Namespace) -> int:
    from fedgrpo.console import org
    from fedgrpo.console.org_config import load_org_config
    from fedgrpo.flower.reply_log import read_log, summarise

    if args.action == "demo-model":
        from fedgrpo.console.demo_model import serve_demo_model

        serve_demo_model(args.host, args.port)
        return 0
    if args.action == "keys":
        print(org.make_keys(Path(args.dir)))
        return 0
    if args.action == "log":
        path = Path(args.file)
        path = path if path.suffix == ".jsonl" else load_org_config(path).reply_log
        rows = summarise(read_log(path)) if path.exists() else []
        keys = ["run", "flower_run", "replies", "items", "questions", "bytes_sent", "privacy_spent"]
        print(
            json.dumps(rows, indent=2)
            if args.json
            else (_table(rows, keys) if rows else f"no replies in {path}")
        )
        return 0
    cfg = load_org_config(args.file)
    if args.action == "check":
        examples, errors = org.check_org(cfg)
        for line in errors:
            print(f"fedgrpo org: {line}", file=sys.stderr)
        if errors:
            return 2
        print(f"{cfg.data}: {examples} examples, no errors; node config {org.node_config_toml(cfg)}:")
        print(json.dumps(cfg.supernode_config(), indent=2))
        return 0
    return org.start_org(cfg)


def _superlink(args: argparse.Namespace) -> int:
    from fedgrpo.console import superlink

    folder = Path(args.dir)
    if args.action == "start":
        return superlink.start_superlink(folder, Path(args.certs), args.host, args.port)
    try:
        return _superlink_client(args, folder)
    except superlink.NoSuperLink as err:  # nothing was called, nothing written
        print(f"fedgrpo superlink: {err}", file=sys.stderr)
        return 1


def _superlink_client(args: argparse.Namespace, folder: Path) -> int:
    """``register`` and ``orgs``: the ``flwr`` client's side of the server's folder."""
    from fedgrpo.console import superlink

    if args.action == "register":
        done = superlink.register(folder, Path(args.key), args.name)
        print((done.stdout + done.stderr).strip())
        return done.returncode
    run = Path(args.run) if args.run else None
    if args.wait and (why := superlink.wait_until_up(folder, args.wait, args.online, run)):
        print(f"fedgrpo superlink: not ready within {args.wait:.0f} s: {why}", file=sys.stderr)
        return 1
    rows = superlink.list_orgs(folder, run)
    keys = ["name", "node", "status", "since", "run"]
    print(json.dumps(rows, indent=2) if args.json else _table(rows, keys))
    return 0


def console_main(argv: list[str]) -> int:
    """``fedgrpo org ...`` / ``fedgrpo superlink ...``: 2 for a bad file, 1 for a failure."""
    args = _parser(argv[0]).parse_args(argv[1:])
    try:
        return (_org if argv[0] == "org" else _superlink)(args)
    except (ConfigError, ValueError, OSError) as err:
        print(f"fedgrpo {argv[0]}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # e.g. the SuperLink does not answer: the reason in one line
        print(f"fedgrpo {argv[0]}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
