"""FedGRPO on Flower's engines, as real processes on loopback (no mocks of Flower).

Deployment: a SuperLink with TLS and SuperNode authentication, one SuperNode per client pointed at its
own data file, the run submitted by ``fedgrpo run ... federation.transport=flower-deployment``.
Simulation: the Simulation Engine (Ray) with several virtual clients. All slow (minutes on 2 cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedgrpo.client.privacy_ledger import Accountant  # noqa: E402
from fedgrpo.storage.checkpoints import complete_checkpoints  # noqa: E402
from tests.e2e.flower_deploy import BIN, Deployment, make_deployment  # noqa: E402
from tests.helpers import fedgrpo  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture()
def deployment(tmp_path: Path):
    d = make_deployment(tmp_path)
    d.start_superlink()
    yield d
    d.stop()


def _start_clients(d: Deployment, n: int = 3) -> None:
    for i in range(n):
        assert d.register(f"supernode-{i}", f"client-{i}").returncode == 0
        d.start_supernode(f"client-{i}", f"supernode-{i}")


def _run_cmd(preset: str, out: Path, *overrides: str) -> list[str]:
    """``fedgrpo run PRESET`` into ``out`` without evaluations, plus overrides."""
    return [
        str(BIN / "fedgrpo"),
        "run",
        preset,
        f"run.output_dir={out}",
        "eval.before=false",
        "eval.after=false",
        *overrides,
    ]


SIMULATION = ("federation.transport=flower-simulation", "flower.ray_cpus=2")


def _start_clients_from(d: Deployment, first: int, n: int = 3) -> None:
    for i in range(first, n):
        assert d.register(f"supernode-{i}", f"client-{i}").returncode == 0
        d.start_supernode(f"client-{i}", f"supernode-{i}")


def _fedgrpo_run(d: Deployment, out: Path, *overrides: str, wait: bool = True):
    cmd = _run_cmd("smoke", out, *d.server_overrides(), "flower.num_supernodes=3", *overrides)
    log = (out.parent / f"{out.name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=d.env)
    if wait:
        proc.wait(timeout=540)
    return proc


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def test_a_failing_serverapp_fails_the_command_with_its_reason(
    deployment: Deployment, tmp_path: Path
) -> None:
    _start_clients(deployment, 2)
    out = tmp_path / "run"
    # three experts per question wanted, two organisations come: the ServerApp fails at its first round
    proc = _fedgrpo_run(
        deployment,
        out,
        "flower.connect_timeout_s=20",
        "federation.selector=random",
        "federation.experts_per_question=3",
    )
    text = (tmp_path / "run.log").read_text()
    assert proc.returncode == 1, text[-3000:]
    assert "finished:failed" in text and "cannot pick M=3 experts from 2 clients" in text
    assert not (out / "results.json").exists()
    _start_clients_from(deployment, 2)
    again = _fedgrpo_run(deployment, out)  # the failed run's folder holds no finished run: not refused
    assert again.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    refused = _fedgrpo_run(deployment, out)  # a finished run is never overwritten or returned again
    assert refused.returncode == 2 and "--resume" in (tmp_path / "run.log").read_text()


def test_a_killed_supernode_is_skipped_then_rejoins_under_its_key_and_nothing_is_lost(
    deployment: Deployment, tmp_path: Path
) -> None:
    """SIGKILL one SuperNode mid-run, restart it under its key, see it routed again; then stop the run
    with ``flwr stop`` and finish it with ``--resume``.

    The SuperLink holds a killed node's key for about a minute (two missed heartbeats) however fast
    the machine: a run of a fixed number of steps raced that minute and, on a fast machine, ended
    before the node could rejoin. So the run is given steps it will not reach and stopped once the
    node is back; its resume then finishes it at a step the test chooses.
    """
    _start_clients(deployment)
    out = tmp_path / "run"
    settings = ("run.save_steps=2", "flower.reward_timeout_s=15", "flower.rejoin_interval_s=5")
    proc = _fedgrpo_run(deployment, out, "grpo.max_steps=1000", *settings, wait=False)
    first_log = tmp_path / "run.log"
    marker = out / "checkpoints" / "checkpoint-2" / "COMPLETE"
    deadline = time.time() + 400
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), first_log.read_text()[-4000:]
    deployment.supernodes["client-2"].kill()  # SIGKILL: the SuperLink hears nothing

    def gone_at() -> int | None:
        """The first step after the kill that timed out on it or left it out (smoke routes every
        client at every step; Flower may report the lost node before the round's time limit)."""
        return next(
            (
                r["step"]
                for r in _rows(out)
                if r["step"] > 2 and (r["fed/timed_out"].get("client-2") or "client-2" not in r["fed/routed"])
            ),
            None,
        )

    # down until the server has noticed: a restart before any round reached it would skip nothing
    while gone_at() is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    gone = gone_at()
    assert gone is not None, first_log.read_text()[-4000:]
    # Flower refuses the same key while it still counts the old node online, and its SuperNode then
    # exits: restart it until the SuperLink lets it back in.
    back = False
    while not back and time.time() < deadline + 200 and proc.poll() is None:
        node = deployment.start_supernode("client-2", "supernode-2")
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            back = True  # still running: activated
    assert back, first_log.read_text()[-3000:] + deployment.log("supernode-client-2")[-3000:]

    # routed to and answering again (the ServerApp's own log, with its join events, stays with the
    # SuperLink: the rows say it)
    def routed_again() -> bool:
        return any(
            r["step"] > gone and "client-2" in r["fed/routed"] and not r["fed/timed_out"].get("client-2")
            for r in _rows(out)
        )

    while not routed_again() and time.time() < deadline + 400:
        assert proc.poll() is None, first_log.read_text()[-4000:]
        time.sleep(0.5)
    assert routed_again(), first_log.read_text()[-4000:]

    run_id = re.search(r"Flower run (\d+) started", first_log.read_text())
    assert run_id, first_log.read_text()[-3000:]
    assert deployment.flwr("stop", run_id.group(1), "fedgrpo").returncode == 0
    assert proc.wait(timeout=120) != 0  # a stopped run is not a finished one
    stopped = _rows(out)
    assert [r["step"] for r in stopped] == list(range(1, len(stopped) + 1))

    done = complete_checkpoints(out / "checkpoints")[-1][0]
    target = done + 2
    resumed = _fedgrpo_run(deployment, out, f"grpo.max_steps={target}", *settings, "--resume")
    assert resumed.returncode == 0, first_log.read_text()[-4000:]  # the resumed run's log now
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == target
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, target + 1))  # nothing lost, nothing counted twice
    assert rows[:done] == stopped[:done]  # the steps up to the checkpoint kept as they were
    missed = sum(r["fed/timed_out"].get("client-2", 0) for r in rows)
    assert results["communication"]["fed/timed_out"].get("client-2", 0) == missed  # kept across resume
    assert "client-2" in rows[-1]["fed/routed"] and rows[-1]["fed/rewards_received"] > 0
    events = [e["event"] for e in results["transport"]["events"] if e["client"] == "client-2"]
    assert events[0] == "joined"  # the resumed run is a new Flower run: its nodes join it afresh


def test_organisations_with_differential_privacy_report_their_spend_and_keep_their_ledger(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Each organisation sets its own privacy in its node config; every message is a fresh ClientApp
    process, so its cache and ledger live in its state file, next to its data file."""
    for i in range(3):
        assert deployment.register(f"supernode-{i}", f"client-{i}").returncode == 0
        privacy = f"privacy-epsilon={0.5 * (i + 1)} privacy-budget-epsilon=1000"
        deployment.start_supernode(f"client-{i}", f"supernode-{i}", node_config=privacy)
    out = tmp_path / "run"
    proc = _fedgrpo_run(deployment, out, "grpo.max_steps=2", "federation.selector=all")
    assert proc.returncode == 0, (out.parent / "run.log").read_text()[-4000:]
    privacy = json.loads((out / "results.json").read_text())["privacy"]
    assert sorted(privacy) == ["client-0", "client-1", "client-2"]
    released = 0
    for i in range(3):
        state_file = deployment.data / f"client-{i}" / "data.jsonl.privacy.json"
        state = json.loads(state_file.read_text())
        assert list(state["runs"]) == ["smoke"] and oct(state_file.stat().st_mode & 0o777) == "0o600"
        sent = state["runs"]["smoke"]["values_sent"]
        released += sum(sent.values())
        # the ledger persisted across processes: the spend reported is that of every value sent
        spent = Accountant(1e-5).epsilon(sent)
        assert privacy[f"client-{i}"] == {"epsilon": round(spent, 6), "delta": 1e-5}
        assert state["summary"]["per_example_epsilon_max"] <= 1000
    assert released > 0


def test_a_refused_impostor_does_not_stand_in_for_an_organisation_still_to_come(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``flower.num_supernodes`` counts organisations that can serve. An impostor (a key registered as
    mallory whose node claims client-0) and a node whose key is not registered are refused, and the
    start still waits for client-2, whose SuperNode comes only after that; the server's console does
    not count the impostor among the organisations online either."""
    d = deployment
    _start_clients(d, 2)
    assert d.register("supernode-2", "client-2").returncode == 0
    assert d.register("supernode-3", "mallory").returncode == 0
    d.start_supernode("client-0", "supernode-3", node_config="name='client-0'", label="mallory")
    d.start_supernode("client-1", "supernode-4", label="unregistered")  # its key was never registered
    out = tmp_path / "run"
    proc = _fedgrpo_run(d, out, "grpo.max_steps=1", wait=False)
    run_log = out / "run.log"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if run_log.exists() and "refused as a client" in run_log.read_text():
            break
        time.sleep(0.5)
    assert "registered as 'mallory' but its profile claims 'client-0'" in run_log.read_text(), (
        tmp_path / "run.log"
    ).read_text()[-3000:]
    # three registered nodes are online, two organisations can serve in this run
    waited = fedgrpo(
        "superlink", "orgs", "--dir", str(d.root), "--run", str(out), "--wait", "1", "--online", "3"
    )
    assert waited.returncode == 1 and "2 of 3 organisation(s) online" in waited.stderr, waited.stderr
    d.start_supernode("client-2", "supernode-2")
    assert proc.wait(timeout=540) == 0, (tmp_path / "run.log").read_text()[-4000:]
    transport = json.loads((out / "results.json").read_text())["transport"]
    joined = {e["client"]: e["t"] for e in transport["events"] if e["event"] == "joined"}
    assert sorted(joined) == ["client-0", "client-1", "client-2"]
    # the run started once client-2 had joined (event times are rounded to 0.01 s)
    assert joined["client-2"] <= round(transport["startup_seconds"], 2)
    assert transport["counts"]["impostor_refused"] == 1 and "of 3 clients joined" not in run_log.read_text()
    assert d.supernodes["unregistered"].wait(timeout=90) != 0  # the SuperLink turned its key away


def test_supernode_with_unregistered_key_is_refused(deployment: Deployment) -> None:
    assert deployment.register("supernode-0").returncode == 0
    proc = deployment.start_supernode("client-3", "supernode-3")  # its key was never registered
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
    listed = deployment.flwr("supernode", "list", "fedgrpo", "--format", "json")
    assert listed.returncode == 0
    nodes = json.loads(listed.stdout[listed.stdout.index("{") :])["nodes"]
    assert [n["status"] for n in nodes] == ["registered"]  # only the registered key, never online
    assert proc.returncode != 0


def test_simulation_engine_runs_the_smoke_job_with_virtual_clients(tmp_path: Path) -> None:
    # graph-smoke: client models too, so the confidence graph's competence queries cross Flower as well
    out = tmp_path / "sim"
    proc = subprocess.run(
        _run_cmd("graph-smoke", out, "data.num_clients=4", *SIMULATION),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 3
    assert sorted(results["transport"]["clients"]) == [f"client-{i}" for i in range(4)]
    comm = results["communication"]
    assert comm["fed/rewards_received"] > 0 and comm["fed/rejected_total"] == 0
    graph = results["selection"]  # built from competence replies that came back over Flower
    assert graph["clients"] == 4 and graph["rejected"] == {} and graph["bytes_up"] > 0
    assert sum(comm["fed/methods"].values()) > 0
    counted = comm["fed/bytes_down"] + comm["fed/bytes_up"] + graph["bytes_down"] + graph["bytes_up"]
    assert results["transport"]["counts"]["bytes_verified"] == counted


def test_a_simulated_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "sim"

    def fedgrpo(*extra: str) -> subprocess.CompletedProcess:
        cmd = _run_cmd("smoke", out, "run.save_steps=2", *SIMULATION, *extra)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=400)

    first = fedgrpo("grpo.max_steps=2")
    assert first.returncode == 0, first.stderr[-4000:]
    again = fedgrpo("grpo.max_steps=4", "--resume")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resuming from" in again.stderr and "(step 2)" in again.stderr
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]  # nothing lost, nothing counted twice
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    assert (out / "checkpoints" / "checkpoint-4" / "COMPLETE").exists()
