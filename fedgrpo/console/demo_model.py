"""``fedgrpo org demo-model``: a stand-in expert for the deployment demo, NOT a language model.

The guide's organisations need a model that answers in the tagged form clients parse
(``<answer>...</answer>``), or every model-scored item abstains and model-based rewards stay 0; a
tiny random model never tags, and a real one is too slow for a demo on a CPU. This OpenAI-compatible
server (``/v1/chat/completions``, ``/v1/models``; standard library only) answers the last question it
is sent: an integer sum or difference (``7 + 9``, ``4 - 2``) exactly, a yes/no question with "Yes",
anything else with "0". Real organisations serve their own model (docs/deployment.md).
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["demo_answer", "serve_demo_model"]

NAME = "fedgrpo-demo"
_SUM = re.compile(r"(-?\d+)((?:\s*[-+]\s*\d+)+)\s*=?\s*$")
_TERM = re.compile(r"([-+])\s*(\d+)")


def demo_answer(question: str) -> str:
    """The reply to one question, in the tagged form: exact for a sum or difference, else a guess."""
    first = question.strip().splitlines()[0] if question.strip() else ""
    if m := _SUM.search(first):
        total = int(m.group(1)) + sum(int(n) if s == "+" else -int(n) for s, n in _TERM.findall(m.group(2)))
        return f"{m.group(0).strip().rstrip('=').strip()} = {total}. <answer>{total}</answer>"
    if re.search(r"\byes\b", question, re.IGNORECASE):
        return "<answer>Yes</answer>"
    return "<answer>0</answer>"


class _Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": NAME, "object": "model"}]})
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path} (chat completions only)"}})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            question = [m["content"] for m in body["messages"] if m.get("role") == "user"][-1]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            return self._send(400, {"error": {"message": f"not a chat request: {err}"}})
        text = demo_answer(str(question))
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return self._send(200, {"object": "chat.completion", "model": NAME, "choices": [choice]})


def serve_demo_model(host: str, port: int) -> None:
    """Serve until interrupted; each request is logged on stderr (``POST /v1/chat/completions``)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    print(f"demo model {NAME} on http://{host}:{port}/v1 (a stand-in, not a language model)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
