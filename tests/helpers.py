"""Helpers shared by the tests: the CLI in a real subprocess, metric rows, a hand-computed objective,
a real ``transformers serve`` and loopback stub servers for client models behind an endpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.client import Evaluation
from fedgrpo.client.agreement import agreement_rewards
from fedgrpo.client.endpoint import EndpointError, EndpointModel
from fedgrpo.data import Example

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> Any:
    """A script of the repository (``bench/x.py``, ``scripts/x.py``) as a module, as its command runs it."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EPS = 1e-4  # the objective's epsilon, restated here so the hand calculation does not import it


def fedgrpo(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m fedgrpo.cli ARGS`` in a real subprocess, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "fedgrpo.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FEDGRPO_LOG": "INFO"},
    )


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def hand_mean_aggregation() -> list[float]:
    """Expert A scores all four candidates, expert B misses candidate 1, expert C misses everything."""
    a = [1.0, 0.0, 1.0, 0.0]
    b = [1.1, 0.1, 0.1]  # candidates 0, 2, 3
    za = [(r - 0.5) / (sample_std(a) + EPS) for r in a]
    mb = sum(b) / 3
    zb = {i: (r - mb) / (sample_std(b) + EPS) for i, r in zip([0, 2, 3], b, strict=True)}
    combined = [(za[0] + zb[0]) / 2, za[1], (za[2] + zb[2]) / 2, (za[3] + zb[3]) / 2]
    centre = sum(combined) / 4
    return [c - centre for c in combined]


# -- client models behind an endpoint: a real transformers serve, loopback stubs ------------------------

SERVE_START_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def transformers_serve(folder: str, tmp: Path) -> Iterator[EndpointModel]:
    """``transformers serve FOLDER --device cpu`` on a free loopback port, stopped on exit."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip('transformers serve needs its extra: pip install "transformers[serving]"')
    cli = Path(sys.executable).with_name("transformers")
    if not cli.exists():
        pytest.skip(f"no transformers command next to {sys.executable}")
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        # GET /v1/models scans the hub cache and answers 500 when the folder does not exist.
        "HF_HUB_CACHE": str(tmp / "hub"),
        "OMP_NUM_THREADS": "1",
    }
    (tmp / "hub").mkdir()
    cmd = [str(cli), "serve", folder, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = EndpointModel(f"http://127.0.0.1:{port}/v1", folder, timeout_s=60, max_retries=0)
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                endpoint.health()
                break
            except EndpointError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"transformers serve not up in {SERVE_START_S:g} s:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


Reply = tuple[int, str, bytes]  # a stub's answer: status, content type, body


@contextmanager
def stub_server(respond: Callable[[str, str, dict[str, Any] | None], Reply]) -> Iterator[tuple[str, list]]:
    """A threaded loopback HTTP server answering with ``respond(method, path, json_body)``.

    Yields the ``/v1`` base URL and the list of (method, path, body, headers) it received.
    """
    seen: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.command, self.path, body, dict(self.headers)))
            status, ctype, payload = respond(self.command, self.path, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                pass

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def json_reply(obj: object, status: int = 200) -> Reply:
    return status, "application/json", json.dumps(obj).encode()


def chat_reply(content: object) -> Reply:
    return json_reply(
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": content}}]}
    )


def assert_outcomes_match(run_dir: Path, results: dict[str, Any]) -> None:
    """The run folder's ``outcomes.json`` adds up to its results' accuracy table, per evaluation."""
    from fedgrpo.run.outcomes import load_outcomes

    for when in ("before", "after"):
        outcomes, table = load_outcomes(run_dir, when), results.get(when)
        if table is None or (when == "before" and results.get("steps") == 0 and outcomes is None):
            continue  # not evaluated, or zero-shot (its one evaluation is saved as "after")
        assert outcomes is not None and set(outcomes) == set(table), when
        for domain, acc in table.items():
            out = outcomes[domain]
            assert len(out.qids) == acc["n"] == len(out.strict) == len(out.answer) == len(out.tagged)
            assert (out.strict.count("1"), out.answer.count("1")) == (acc["correct"], acc["answer_correct"])
            assert out.tagged.count("1") == round(acc["format_rate"] * acc["n"])


# -- Flower messages as a SuperNode delivers them ---------------------------------------------------------


def delivered(
    content: Any, kind: str, message_id: str = "m1", src_node_id: int = 1, dst_node_id: int = 7
) -> Any:
    """A message of run 1 as its receiver gets it: with the id the SuperLink gave it (a reply refers
    to it) and its sender's node id, built through Flower's public ``Metadata``."""
    from flwr.app import Message, Metadata

    metadata = Metadata(
        run_id=1,
        message_id=message_id,
        src_node_id=src_node_id,
        dst_node_id=dst_node_id,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=kind,
    )
    return Message(content=content, metadata=metadata)


class KnowingModel:
    """A client model that knows every answer it is asked about: a strong honest expert."""

    def __init__(self, examples: list[Example]) -> None:
        self._answers = {ex.question: ex.answer for ex in examples}

    def answer(self, question: str) -> str | None:
        return self._answers.get(question)

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        return Evaluation(agreement_rewards(self.answer(question) or "", candidates), "model")
