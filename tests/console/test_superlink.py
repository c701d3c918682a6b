"""``fedgrpo superlink``: what a run's log says of each organisation, and a start that names the
certificate files it lacks. (Its start, registration and listing against a real SuperLink run in
tests/e2e/test_deployment_guide.py.)"""

from __future__ import annotations

from pathlib import Path

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
