"""``fedgrpo privacy show STATE`` / ``fedgrpo privacy reset STATE --yes``: an organisation's own view
of its privacy ledger (:mod:`fedgrpo.client.privacy_state`), and the one deliberate way to reset it.

``show`` prints JSON: the owner (the data file's name), the policy last used, the totals (the
largest per-example epsilon at its delta, the budget, how many examples reached it, model releases not
covered) and each run's record (values sent by answer check, model and free noise, its per-release
epsilon, when it was answered). ``reset`` needs ``--yes``; it keeps the dropped totals in the file
under ``resets``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedgrpo.client.privacy_state import reset, show


def add_privacy_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``privacy show|reset STATE`` on the ``fedgrpo`` command's subparsers."""
    privacy = sub.add_parser(
        "privacy", help="an organisation's privacy ledger: what it spent (show), or start afresh (reset)"
    )
    actions = privacy.add_subparsers(dest="privacy_action", required=True)
    shown = actions.add_parser("show", help="print the totals and each run's spend as JSON")
    shown.add_argument("state", help="the privacy state file (node config privacy-state)")
    cleared = actions.add_parser("reset", help="start the ledger afresh (needs --yes)")
    cleared.add_argument("state", help="the privacy state file (node config privacy-state)")
    cleared.add_argument("--yes", action="store_true", help="yes, drop the ledger and the cache")


def privacy_command(args: argparse.Namespace) -> int:
    """Run ``fedgrpo privacy ...``; 0 done, 1 no such or unreadable state, 2 reset without ``--yes``."""
    path = Path(args.state).expanduser()
    if args.privacy_action == "reset" and not args.yes:
        print(
            f"fedgrpo: privacy reset drops the ledger of {path}: every example's spend so far; "
            "give --yes to do it",
            file=sys.stderr,
        )
        return 2
    try:
        out = show(path) if args.privacy_action == "show" else {"reset": reset(path)}
    except (OSError, ValueError) as err:
        corrupt = isinstance(err, json.JSONDecodeError)
        reason = f"{path} is not a privacy state file ({err})" if corrupt else err
        print(f"fedgrpo: privacy {args.privacy_action}: {reason}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0
