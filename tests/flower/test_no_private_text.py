"""Nothing of an organisation's data or paths reaches the server, and nothing of the server's paths
reaches an organisation: the deployed ClientApp with a poisoned data file, on real Flower objects."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402

from fedgrpo.config import ConfigError, load_config  # noqa: E402
from fedgrpo.flower.client_app import make_client_app  # noqa: E402
from fedgrpo.flower.codec import read_profile, to_records  # noqa: E402
from fedgrpo.flower.launch import absolute_paths, deployment_run_config  # noqa: E402
from fedgrpo.flower.run_config import save_server_config  # noqa: E402
from fedgrpo.flower.server_app import server_config  # noqa: E402
from fedgrpo.protocol import (  # noqa: E402
    CompetenceItem,
    CompetenceRequest,
    ProtocolError,
    RewardItem,
    RewardRequest,
    decode,
)
from tests.helpers import delivered  # noqa: E402

ANSWER, QUESTION, TASK = "SECRET-ANSWER-42", "What is SECRET-QUESTION-17?", "SECRET-TASK-5"
ORG_DIR, SERVER_DIR = "org-private-folder-x9", "server-private-folder-q7"
GOOD = json.dumps({"question": "What is 2 + 2?", "answer": "4"})
POISONED = {  # line 2 of the organisation's file -> the public reason the server may read
    "entry-answer": (
        json.dumps({"question": QUESTION, "answer": ANSWER, "entry": {"answer": "SECRET-ENTRY-7"}}),
        "field 'entry.answer' differs from field 'answer'",
    ),
    "unknown-task": (
        json.dumps({"question": QUESTION, "answer": ANSWER, "entry": {"metadata": {"source_dataset": TASK}}}),
        "field 'entry.metadata.source_dataset' is not a reasoning-gym task",
    ),
    "not-json": (
        f'{{"question": "{QUESTION}", "answer": {ANSWER}}}',
        "not valid JSON (Expecting value at column",
    ),
    "not-object": (json.dumps([QUESTION, ANSWER]), "expected a JSON object per line, got array"),
    "answer-type": (
        json.dumps({"question": QUESTION, "answer": [ANSWER]}),
        "field 'answer' must be a string, got array",
    ),
    "not-utf8": (f'{{"question": "{QUESTION}\udce9", "answer": "{ANSWER}"}}', "not UTF-8 text"),
    "too-long": (
        json.dumps({"question": QUESTION + "x" * 70_000, "answer": ANSWER}),
        "line longer than the limit of 65536 bytes",
    ),
}


@pytest.fixture()
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    """The run config exactly as ``fedgrpo run`` sends it, and the organisation's folder."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    monkeypatch.setenv("FEDGRPO_HOME", str(tmp_path / "server-home"))
    server = tmp_path / SERVER_DIR
    server.mkdir()
    for name in ("questions", "auxiliary", "heldout"):
        row = {"question": "What is 1 + 1?"} | ({} if name == "questions" else {"answer": "2"})
        (server / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    (server / "ca.crt").write_text("a CA certificate\n")
    monkeypatch.chdir(server)  # the server's own relative paths, made absolute as fedgrpo run does
    cfg = absolute_paths(
        load_config(
            "smoke",
            [
                "federation.transport=flower-deployment",
                "flower.num_supernodes=3",
                "flower.root_certificates=ca.crt",
                "server.questions=questions.jsonl",
                "server.auxiliary=auxiliary.jsonl",
                "server.heldout=heldout.jsonl",
                "run.output_dir=runs/demo",
            ],
        )
    )
    token, view, stored = save_server_config(cfg)
    text = deployment_run_config(token, view, resume=False)
    assert SERVER_DIR not in text and str(tmp_path) not in text  # nothing of the server's paths
    assert os.stat(stored).st_mode & 0o777 == 0o600  # the whole config stays with the server
    run_config = tomllib.loads(text)
    full = server_config(run_config)  # the ServerApp gets its whole config back, paths and all
    assert full.server.questions == str(server / "questions.jsonl")
    assert full.output_dir == server / "runs" / "demo"
    same = [c.model_dump(exclude={"data"}) for c in (full, cfg)]  # no data recipe in a deployment
    assert same[0] == same[1]
    org = tmp_path / ORG_DIR
    org.mkdir()
    monkeypatch.chdir(org)
    return run_config, org


def _ask(run_config: dict, node: dict) -> list[Message]:
    """Every message a deployed ClientApp sends the server in a run: profile, reward, competence."""
    app = make_client_app()
    context = Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config=run_config)
    reward = RewardRequest("r1", "?", [RewardItem("0", "What is 2 + 2?", ["<answer>4</answer>"])])
    competence = CompetenceRequest("c1", "?", [CompetenceItem("a1", "What is 2 + 2?", "4")])
    messages = [
        delivered(RecordDict(), "query.profile"),
        delivered(to_records(reward), "query.reward"),
        delivered(to_records(competence), "query.competence"),
    ]
    return [app(message=m, context=context) for m in messages]


def _what_reaches_the_server(replies: list[Message]) -> str:
    """Every record of every reply, decoded, and what the server makes of the profile (its log line)."""
    seen = []
    for reply in replies:
        assert not reply.has_error()
        for record in reply.content.values():
            assert isinstance(record, ConfigRecord | MetricRecord)
            for key, value in record.items():
                text = value.decode("latin-1") if isinstance(value, bytes) else repr(value)
                seen.append(f"{key}={text}")
                if key == "payload":
                    seen.append(repr(decode(value)))
    with pytest.raises(ProtocolError) as refused:
        read_profile(replies[0].content)
    return "\n".join([*seen, str(refused.value)])


@pytest.mark.parametrize("case", sorted(POISONED))
def test_a_poisoned_data_file_reaches_the_server_without_values_or_paths(
    deployment, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_config, org = deployment
    line, reason = POISONED[case]
    data = org / "data.jsonl"
    data.write_bytes(f"{GOOD}\n{line}\n".encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING):
        seen = _what_reaches_the_server(_ask(run_config, {"data-file": str(data)}))
    for secret in (ANSWER, "SECRET", ORG_DIR, str(org), str(Path.home())):
        assert secret not in seen, (secret, seen)
    assert f"data file line 2: {reason}" in seen  # the server still learns which line and why
    assert str(data) in caplog.text  # the organisation's own log keeps the detail


def test_a_missing_data_file_is_named_without_its_path(deployment) -> None:
    run_config, org = deployment
    seen = _what_reaches_the_server(_ask(run_config, {"data-file": str(org / "SECRET-name.jsonl")}))
    assert "data file: file not found" in seen
    assert "SECRET" not in seen and ORG_DIR not in seen


def test_a_clean_organisation_reads_the_clients_part_of_the_run_config(deployment) -> None:
    run_config, org = deployment
    (org / "data.jsonl").write_text(f"{GOOD}\n")
    profile = read_profile(_ask(run_config, {"data-file": str(org / "data.jsonl")})[0].content)
    assert profile["evaluates"] == ["answer"] and profile["domains"] == ["data"]


def test_the_server_refuses_a_run_config_its_store_does_not_match(deployment) -> None:
    run_config, _ = deployment
    with pytest.raises(ConfigError, match="does not match"):
        server_config({**run_config, "config": run_config["config"].replace("seed:", "seed: 1\nx:", 1)})
    with pytest.raises(ConfigError, match="no server config"):
        server_config({**run_config, "server-config": "0" * 32})
    with pytest.raises(ConfigError, match="not a token"):
        server_config({**run_config, "server-config": "../../etc/passwd"})
