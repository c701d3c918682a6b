"""``fedgrpo superlink``: what a run's log says of each organisation, and a start that names the
certificate files it lacks. (Its start, registration and listing against a real SuperLink run in
tests/e2e/test_deployment_guide.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.console.superlink import run_log_states
from tests.helpers import fedgrpo


def test_a_run_log_says_who_joined_and_why_a_node_was_refused(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "12:00:01 INFO fedgrpo.flower.transport: client client-0 joined (node 11)\n"
        "12:00:01 WARNING fedgrpo.flower.transport: node 13 refused as a client: registered as 'mallory' "
        "but its profile claims 'client-0'\n"
        "12:00:02 INFO fedgrpo.flower.transport: client client-1 joined (node 12)\n"
        "12:03:00 INFO fedgrpo.flower.transport: client client-1 left (its SuperNode is gone)\n"
    )
    events, refused = run_log_states(log)
    assert events == {"client-0": "joined", "client-1": "left"}
    assert refused == {13: "registered as 'mallory' but its profile claims 'client-0'"}


def test_start_without_certificates_names_them_and_starts_nothing(tmp_path: Path) -> None:
    done = fedgrpo("superlink", "start", "--dir", str(tmp_path), "--certs", str(tmp_path / "certs"))
    assert done.returncode == 2
    assert "ca.crt" in done.stderr and "fedgrpo flower-certs" in done.stderr
    assert not (tmp_path / "superlink.log").exists()


@pytest.mark.parametrize("wait", [[], ["--wait", "1", "--online", "3"]], ids=["now", "wait"])
def test_orgs_without_a_superlink_started_here_fails_and_leaves_no_file(
    tmp_path: Path, wait: list[str]
) -> None:
    """Flower's CLI writes a default config into an FLWR_HOME that has none: nothing may reach it."""
    done = subprocess.run(
        [sys.executable, "-m", "fedgrpo.cli", "superlink", "orgs", *wait],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "FLWR_HOME"},
    )
    assert done.returncode == 1, done.stderr
    assert f"no SuperLink connection in {tmp_path.resolve() / 'flwr-home' / 'config.toml'}" in done.stderr
    assert "fedgrpo superlink start" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no flwr-home, no default config
