"""docs/deployment.md, run as written: a TLS SuperLink with SuperNode authentication, three
organisations in their own folders with their own keys, data files and models (each served with
``transformers serve``), and a FedGRPO run over them; plus an impostor node that must be refused."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.data import read_labelled, read_questions  # noqa: E402
from fedgrpo.simulation.data import build_data  # noqa: E402
from tests.e2e.guide import Machines, guide_blocks  # noqa: E402

pytestmark = pytest.mark.slow

ORGS = ["client-0", "client-1", "client-2"]


@pytest.fixture()
def machines(tmp_path: Path):
    m = Machines(tmp_path)
    yield m
    m.stop()


def test_the_deployment_guide_runs_as_written_and_keeps_each_party_to_its_own_files(
    machines: Machines,
) -> None:
    blocks = guide_blocks()
    assert [p for p, _ in blocks].count("server") >= 4 and {"client-2", "demo-data"} <= {p for p, _ in blocks}
    at = next(i for i, (party, commands) in enumerate(blocks) if "fedgrpo run" in commands)
    setup, (train_party, train), after = blocks[:at], blocks[at], blocks[at + 1 :]
    assert train_party == "server"
    for party, commands in setup:
        machines.sh(party, commands)

    # An impostor: a fourth key, registered as "mallory", whose node claims to be client-0.
    machines.sh("mallory", 'ssh-keygen -q -t ecdsa -b 384 -N "" -f key && cp key.pub ../server/mallory.pub')
    machines.sh("server", "fedgrpo superlink register mallory.pub --name mallory")
    data = machines.folder("client-0") / "data.jsonl"
    ca = machines.folder("server") / "certs" / "ca.crt"
    machines.sh(
        "mallory",
        f'flower-supernode --root-certificates "{ca}" --superlink 127.0.0.1:9093 '
        f'--auth-supernode-private-key "$PWD/key" --port 9109 '
        f'--node-config \'data-file="{data}" name="client-0"\' > supernode.log 2>&1 &',
    )

    machines.sh("server", train, timeout=900)
    shown = {party: machines.sh(party, commands).stdout for party, commands in after}
    print(
        "\n".join(line.split("\n", 1)[0] for line in machines.log)
    )  # each block's time: the guide's timings
    out = machines.folder("server") / "runs" / "demo"
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 6
    transport, comm = results["transport"], results["communication"]
    assert sorted(transport["clients"]) == ORGS  # identities are the registered names
    assert transport["counts"].get("impostor_refused", 0) >= 1
    assert "mallory" not in comm["fed/routed"] and comm["fed/rewards_received"] > 0
    assert transport["counts"]["bytes_verified"] == comm["fed/bytes_down"] + comm["fed/bytes_up"]
    # each organisation scored the questions it does not hold through its own served model
    for org in ORGS:
        assert "POST /v1/chat/completions" in (machines.folder(org) / "state" / "serve.log").read_text(), org
    # the server's console names each organisation and what the run made of it; client-2's own
    # transparency log summarises the run it served, with its privacy spent
    listed = shown["server"]
    assert all(re.search(rf"{org} .* online .* joined", listed) for org in ORGS), listed
    assert re.search(r"mallory .* refused: registered as 'mallory'", listed), listed
    assert "smoke" in shown["client-2"] and "reward" in shown["client-2"], shown["client-2"]
    assert comm["fed/methods"].get("answer", 0) > 0
    assert comm["fed/methods"].get("model", 0) > 0  # the demo model tags its answers: real model rewards
    # the server holds only its own files: no split, no label audit
    assert results["split"] is None and not (out / "split.json").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("fed/reward_correctness" not in r for r in rows)
    log = (out / "run.log").read_text()
    assert "client client-0 joined" in log and "before [95% CI]" in log

    # client-2 released with differential privacy (its node config): its per-release spend is
    # reported; its ledger (per example, within its budget) sits next to its data file, readable by it
    # alone, and never reaches the server beyond that one figure (the demo data are drawn afresh each
    # time: an answer check is charged to its example only where client-2 holds the question)
    questions = {q.question for q in read_questions(machines.folder("server") / "questions.jsonl")}
    held = {ex.question for ex in read_labelled(machines.folder("client-2") / "data.jsonl")}
    privacy = results["privacy"]
    assert sorted(privacy) == ["client-2"], privacy
    assert privacy["client-2"]["epsilon"] > 0 and "per_example_epsilon_max" not in privacy["client-2"]
    state_file = machines.folder("client-2") / "data.jsonl.privacy.json"
    state = json.loads(state_file.read_text())
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600 and state["owner"] == "data.jsonl"
    assert state["summary"]["per_example_epsilon_max"] <= 4 == state["summary"]["budget_epsilon"]
    assert state["summary"]["examples_charged"] <= len(questions & held), (state["summary"], len(held))
    printed = machines.sh("client-2", "fedgrpo privacy show data.jsonl.privacy.json").stdout  # stderr too
    shown = json.loads(printed[printed.index("{\n") :])
    assert shown["total"] == state["summary"] and len(shown["runs"]) == 1
    assert not (machines.folder("client-0") / "data.jsonl.privacy.json").exists()

    # Nothing any party received lets it rebuild another's data: the run config carries no data
    # recipe and no organisation's question, and the files were not drawn from the config's seed.
    run_config = (out / "flower_run_config.toml").read_text()
    assert "\ndata:" not in run_config
    private = {org: read_labelled(machines.folder(org) / "data.jsonl") for org in ORGS}
    for org, examples in private.items():
        assert not any(ex.question in run_config for ex in examples), org
        mode = (machines.folder(org) / "data.jsonl").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, org  # readable by its owner only
    rebuilt = build_data(load_config("smoke")).clients
    for k, org in enumerate(ORGS):
        assert {ex.question for ex in rebuilt[f"client-{k}"]} != {ex.question for ex in private[org]}
