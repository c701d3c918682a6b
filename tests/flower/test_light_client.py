"""The light ClientApp: an answer-only or endpoint-served client imports no torch, transformers or TRL.

On Flower's Deployment Engine every message starts a fresh ClientApp process, so what importing the
client side costs is paid per message; and an organisation serving its model elsewhere need not
install a model library at all. Checked in fresh subprocesses, since this test process has them loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.data import Example, write_client_data
from tests.helpers import chat_reply, stub_server

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "transformers", "trl")


def _python(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_client_app_loads_no_model_library() -> None:
    pytest.importorskip("flwr")
    code = f"import fedgrpo.flower.client_app, sys; print(any(m in sys.modules for m in {HEAVY!r}))"
    assert _python(code) == "False"


def test_answer_only_and_endpoint_clients_run_without_a_model_library(tmp_path) -> None:
    """Built and queried as a deployed ClientApp builds them (config from the run config, node config
    with data-file, and endpoint), in a fresh process: torch, transformers and TRL stay unloaded."""
    pytest.importorskip("flwr")
    code = """
import json, sys
from fedgrpo.flower.client_app import client_for, config_from_run_config
from fedgrpo.protocol import RewardItem, RewardRequest
cfg = config_from_run_config({"config": "smoke", "overrides": "clients.samples=1"})
request = RewardRequest("r", "org", [RewardItem("a", sys.argv[3], ["<answer>1</answer>"])])
node = {"data-file": sys.argv[1]}
def method(reply):
    return next(m for m, n in reply.methods.items() if n)
answer_only = method(client_for(cfg, node).respond(request))
endpoint = {**node, "endpoint": sys.argv[2], "endpoint-model": "m"}
served = method(client_for(cfg, endpoint).respond(request))
heavy = [m for m in ("torch", "transformers", "trl") if m in sys.modules]
print(json.dumps([answer_only, served, heavy]))
"""
    data = tmp_path / "org.jsonl"
    write_client_data([Example("sums:1", "sums", "What is 3 + 4?", "7")], data)
    with stub_server(lambda *_: chat_reply("<answer>12</answer>")) as (url, seen):
        out = _python(code, str(data), url, "How many eggs are in a dozen?")
    assert json.loads(out) == ["none", "model", []]  # it does not hold the question; its model scores it
    assert len(seen) == 1
