"""``fedgrpo org``: the organisation's file, its local data check (every bad line named), the node
config Flower reads, the key pair, the log summary, and a start that waits for its model, joins with
a real ``flower-supernode`` and stops both on SIGTERM; the demo's stand-in model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from fedgrpo.config import ConfigError
from fedgrpo.console.demo_model import demo_answer
from fedgrpo.console.org import check_data, node_config_toml
from fedgrpo.console.org_config import load_org_config
from fedgrpo.console.supervise import Child, Stop, stop_all, supervise
from fedgrpo.flower.reply_log import append, read_log
from fedgrpo.method.answers import parsed_answer
from tests.helpers import fedgrpo, free_port


def _org(
    folder: Path, extra: str = "", data: str = '{"question": "What is 3 + 4?", "answer": "7"}\n'
) -> Path:
    (folder / "data.jsonl").write_text(data)
    path = folder / "org.yaml"
    path.write_text(f"data: data.jsonl\nsuperlink: 127.0.0.1:{free_port()}\nport: {free_port()}\n{extra}")
    return path


def test_every_bad_line_is_named_and_nothing_starts(tmp_path: Path) -> None:
    lines = [
        '{"question": "q1", "answer": "1"}',
        '{"question": 3, "answer": "2"}',
        "not json",
        "",
        '{"question": "q"}',
    ]
    org = _org(tmp_path, data="\n".join(lines) + "\n")
    done = fedgrpo("org", "check", str(org))
    assert done.returncode == 2, done.stderr
    named = re.findall(r"data\.jsonl:(\d+): (.*)", done.stderr)
    assert [int(n) for n, _ in named] == [2, 3, 5]
    assert "'question' must be a string" in named[0][1] and "missing required field 'answer'" in named[2][1]
    assert "key" in done.stderr and "file not found" in done.stderr  # no supernode-key yet
    assert check_data(tmp_path / "data.jsonl")[0] == 0
    assert fedgrpo("org", "start", str(org)).returncode == 2  # started nothing


def test_the_node_config_is_what_flower_reads(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    extra = "name: client-0\nmodel:\n  serve: some/model\n  port: 8123\nnode_config:\n  privacy-epsilon: 1\n"
    cfg = load_org_config(_org(tmp_path, extra + '  privacy-state: "a \\"quoted\\" path"\n'))
    assert cfg.data == tmp_path / "data.jsonl" and cfg.state == tmp_path / "state"
    expected = {
        "data-file": str(tmp_path / "data.jsonl"),
        "reply-log": str(tmp_path / "state" / "replies.jsonl"),
        "name": "client-0",
        "endpoint": "http://127.0.0.1:8123/v1",
        "endpoint-model": "some/model",
        "privacy-epsilon": 1,
        "privacy-state": 'a "quoted" path',
    }
    assert parse_config_args([str(node_config_toml(cfg))]) == expected


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("model:\n  serve: m\n  endpoint: http://x/v1\n  name: m\n", "exactly one of model.serve"),
        ("model:\n  endpoint: http://x/v1\n", "needs model.name"),
        ("node_config:\n  data-file: other.jsonl\n", "set by this file"),
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_org_file_names_its_fault(tmp_path: Path, extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_org_config(_org(tmp_path, extra))


def test_keys_say_what_to_hand_over_and_the_log_is_summarised(tmp_path: Path) -> None:
    done = fedgrpo("org", "keys", str(tmp_path))
    assert done.returncode == 0, done.stderr
    public = (tmp_path / "supernode-key.pub").read_text().strip()
    assert public in done.stdout and "fedgrpo superlink register supernode-key.pub --name" in done.stdout
    assert oct((tmp_path / "supernode-key").stat().st_mode)[-3:] == "600"
    org = _org(tmp_path)
    log = tmp_path / "state" / "replies.jsonl"
    append(log, "demo", 7, {"kind": "profile"}, {"name": "x", "domains": "d"}, None)
    append(
        log,
        "demo",
        7,
        {"kind": "reward", "items": 2, "candidates": 4, "questions": ["a", "b"]},
        b"abc",
        (0.5, 0),
    )
    assert len(read_log(log)) == 2
    (row,) = json.loads(fedgrpo("org", "log", str(org), "--json").stdout)
    assert row["replies"] == {"profile": 1, "reward": 1} and row["bytes_sent"] == 3
    assert row["privacy_spent"] == [0.5, 0] and row["questions"] == 2


def test_a_child_that_fails_fast_is_restarted_until_stopped(tmp_path: Path) -> None:
    child = Child("failing", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "c.log")
    stop = Stop()
    child.start()
    threading.Timer(4.5, stop.event.set).start()
    assert supervise([child], stop) == 0
    assert child.restarts >= 1 and child.pause_s >= 4  # the pause grows while it keeps failing


def test_stopping_a_child_stops_the_processes_it_started(tmp_path: Path) -> None:
    # as a SuperLink starts flwr-serverapp: a grandchild that would outlive its parent's SIGTERM
    spawn = "import subprocess, time; p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); "
    spawn += "time.sleep(300)"
    child = Child("parent", [sys.executable, "-c", spawn], tmp_path / "c.log")
    child.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "c.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int((tmp_path / "c.log").read_text().split()[0])
    assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE  # running
    stop_all([child])
    assert child.exited() is not None
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or dead and waiting for init to reap it
        assert psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_the_demo_model_answers_in_the_tagged_form() -> None:
    ask = "State the final answer to the following arithmetic problem: {} =\nThink briefly, then ..."
    assert demo_answer(ask.format("7 + 9")).endswith("<answer>16</answer>")
    assert demo_answer(ask.format("12 - 20 + 3")).endswith("<answer>-5</answer>")
    assert demo_answer("Does it follow?\n(Answer Yes or No)") == "<answer>Yes</answer>"
    assert parsed_answer(demo_answer(ask.format("4 - 2"))) == "2"  # what a client reads from it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_start_serves_its_model_waits_joins_and_leaves_nothing_behind(tmp_path: Path, sig: int) -> None:
    port = free_port()
    command = f'["{sys.executable}", "-m", "fedgrpo.cli", "org", "demo-model", "--port", "{port}"]'
    model = f"model:\n  endpoint: http://127.0.0.1:{port}/v1\n  name: fedgrpo-demo\n  command: {command}\n"
    org = _org(tmp_path, "ca: null\n" + model)
    (tmp_path / "supernode-key").write_text("not read before the SuperLink answers")
    err = (tmp_path / "err.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgrpo.cli", "org", "start", str(org)], stderr=err, env=env
    )
    deadline = time.monotonic() + 60
    while "joining" not in (tmp_path / "err.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = (tmp_path / "err.log").read_text()
    assert "answers" in text, text
    pids = [int(p) for p in re.findall(r"started \(pid (\d+)", text)]  # the model server, the SuperNode
    assert len(pids) == 2 and "POST /v1/chat/completions" in (tmp_path / "state" / "serve.log").read_text()
    proc.send_signal(sig)
    assert proc.wait(30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:  # stopped by the console; a killed console's children get SIGTERM from Linux
        assert "SuperNode stopped" in (tmp_path / "err.log").read_text()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
