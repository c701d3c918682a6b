"""Bytes on the wire: uplink bytes per reward and downlink bytes per candidate, protocol v3 against v4.

v3 (the encoding before issue 23) was a JSON header line (version, kind, request id of 16 hex
characters, client name, method counts, the client's format bonus, the shape) then the packed body;
this bench rebuilds that size from the same messages (:func:`v3_bytes`, checked against v3's own
``encode``: ``docs/notes/protocol-v4.md``). v4 is :func:`fedgrpo.protocol.encode`: a binary header
(version and kind bytes, a 4-byte request id, varint counts and shape; no name, no bonus) and the
same bodies.

``shape``: no model, seconds: the default run's exchange shape (its split and 5 answer-based
clients, G=8 candidates per question, 2 questions per step, each to M=2 of the 5 clients, one
request per client per step) with placeholder candidates. A reply's size does not depend on the
candidates' text (a byte per reward, whatever it says), so its uplink numbers are the default run's;
its downlink bodies are placeholders (only the request header is comparable).

``smoke``: a whole `fedgrpo run smoke` in this process (tiny random policy, 3 answer-only clients),
every message recorded at the transport; run twice with the same seed to show the bytes, the
rewards and the training metrics repeat exactly.

``smollm2``: as ``shape``, with G=8 candidates of the embedded SmolLM2-135M-Instruct (the default
run's policy and sampling: 40 new tokens, temperature 0.7) for N training questions; downlink also
compared with lzma (raw, preset 9e).

    python bench/wire_bytes.py shape --questions 200
    python bench/wire_bytes.py smoke
    python bench/wire_bytes.py smollm2 --questions 40
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import tempfile
import time
import zlib
from collections.abc import Iterable
from typing import Any

from fedgrpo.protocol import (
    CompetenceReply,
    ErrorReply,
    Message,
    RewardItem,
    RewardReply,
    RewardRequest,
    encode,
    new_request_id,
    pack_reward,
)
from fedgrpo.protocol.wire import ZLIB, _runs
from fedgrpo.transport import InProcessTransport

V3_ID = "0" * 16  # v3 request ids: 8 random bytes as 16 hex characters


def body_of(message: Message) -> bytes:
    """A message's body before compression: the same in v3 and v4."""
    if isinstance(message, RewardRequest):
        items = message.items
        body: Any = {"questions": [i.question for i in items], "candidates": [i.candidates for i in items]}
    elif isinstance(message, RewardReply):
        return bytes(pack_reward(r) for i in message.items for r in i.rewards)
    elif isinstance(message, CompetenceReply):
        n = len(message.bits)
        return (int("".join(map(str, message.bits)) or "0", 2) << (-n % 8)).to_bytes((n + 7) // 8, "big")
    elif isinstance(message, ErrorReply):
        return b""
    else:
        body = {
            "questions": [i.question for i in message.items],
            "answers": [i.answer for i in message.items],
        }
    return json.dumps(body, separators=(",", ":")).encode()


def _sent(body: bytes) -> bytes:
    """The body as sent (both versions): zlib level 9 where that is shorter, from 64 bytes."""
    return packed if len(body) >= 64 and len(packed := zlib.compress(body, 9)) < len(body) else body


def v3_bytes(message: Message) -> tuple[int, int]:
    """(header line with its newline, whole message) of ``message`` in protocol v3."""
    head: dict[str, Any] = {"v": 3, "kind": message.kind, "id": V3_ID, "client": message.client}
    if isinstance(message, RewardReply):
        head["methods"] = [message.methods[m] for m in ("answer", "model", "none")]
        head["bonus"] = 0.1  # federation.format_reward, declared by every client
        head["shape"] = [list(r) for r in _runs([len(i.rewards) for i in message.items])]
    if isinstance(message, CompetenceReply):
        head["n"] = len(message.bits)
    if isinstance(message, ErrorReply):
        head["error"] = message.error
    if getattr(message, "privacy_spent", None) is not None:
        head["privacy_spent"] = list(message.privacy_spent)  # type: ignore[union-attr]
    raw = body_of(message)
    body = _sent(raw)
    if body != raw:
        head["z"] = 1
    line = len(json.dumps(head, separators=(",", ":")).encode()) + 1
    return line, line + len(body)


def v4_header(payload: bytes, message: Message) -> int:
    """The v4 header's bytes: all but the body as sent."""
    body = body_of(message)
    return len(payload) - len(zlib.compress(body, 9) if payload[1] & ZLIB else body)


def lzma_bytes(data: bytes) -> int:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))


def tally(pairs: Iterable[tuple[Message, Message | None]]) -> dict[str, Any]:
    """Bytes per candidate down and per reward up, v3 against v4, over (request, reply) pairs."""
    keys = ["requests", "replies", "candidates", "rewards", "v3_down", "v4_down", "v3_down_header"]
    keys += [
        "v4_down_header",
        "v4_down_plain",
        "v4_down_lzma",
        "v3_up",
        "v4_up",
        "v3_up_header",
        "v4_up_header",
    ]
    t: dict[str, Any] = dict.fromkeys(keys, 0)
    sizes: dict[int, list[int]] = {}  # rewards per reply -> replies of that size
    for request, reply in pairs:
        if not isinstance(request, RewardRequest):
            continue
        payload = encode(request)
        body = body_of(request)
        header = v4_header(payload, request)
        t["requests"] += 1
        t["candidates"] += sum(len(i.candidates) for i in request.items)
        v3_header, v3_all = v3_bytes(request)
        t["v3_down_header"] += v3_header
        t["v3_down"] += v3_all
        t["v4_down"] += len(payload)
        t["v4_down_header"] += header
        t["v4_down_plain"] += header + len(body)
        t["v4_down_lzma"] += header + min(len(body), lzma_bytes(body))
        if isinstance(reply, RewardReply):
            up = encode(reply)
            n = sum(len(i.rewards) for i in reply.items)
            sizes.setdefault(n, []).append(len(up))
            t["replies"] += 1
            t["rewards"] += n
            v3_header, v3_all = v3_bytes(reply)
            t["v3_up"] += v3_all
            t["v3_up_header"] += v3_header
            t["v4_up"] += len(up)
            t["v4_up_header"] += v4_header(up, reply)
    n, r, replies = max(t["candidates"], 1), max(t["rewards"], 1), max(t["replies"], 1)
    t["down_per_candidate"] = {
        "v3": round(t["v3_down"] / n, 1),
        "v4 (zlib where it pays)": round(t["v4_down"] / n, 1),
        "v4 uncompressed": round(t["v4_down_plain"] / n, 1),
        "v4 with lzma instead": round(t["v4_down_lzma"] / n, 1),
        "v3 header per request": round(t["v3_down_header"] / max(t["requests"], 1), 1),
        "v4 header per request": round(t["v4_down_header"] / max(t["requests"], 1), 1),
    }
    t["up_per_reward"] = {
        "v3": round(t["v3_up"] / r, 2),
        "v4": round(t["v4_up"] / r, 2),
        "body only": round((t["v4_up"] - t["v4_up_header"]) / r, 3),
        "rewards per reply": round(r / replies, 1),
        "v3 header per reply": round(t["v3_up_header"] / replies, 1),
        "v4 header per reply": round(t["v4_up_header"] / replies, 1),
        "v4 by rewards per reply": {k: round(sum(v) / len(v) / k, 2) for k, v in sorted(sizes.items()) if k},
    }
    return t


class Recorder:
    """Wraps InProcessTransport.exchange to keep every (request, reply) the run exchanged."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Message, Message | None]] = []
        self.payloads: list[bytes] = []
        self._exchange = InProcessTransport.exchange

    def __enter__(self) -> Recorder:
        recorder = self

        def exchange(transport: InProcessTransport, requests: dict[str, Message]) -> dict[str, Any]:
            out = recorder._exchange(transport, requests)
            for name, delivery in out.items():
                recorder.pairs.append((requests[name], delivery.reply))
                if delivery.reply is not None:
                    recorder.payloads.append(encode(delivery.reply))
            return out

        InProcessTransport.exchange = exchange  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        InProcessTransport.exchange = self._exchange  # type: ignore[method-assign]


def smoke() -> dict[str, Any]:
    from fedgrpo.config import load_config
    from fedgrpo.simulation.in_process import run_in_process

    runs = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as out, Recorder() as recorder:
            cfg = load_config("smoke", [f"run.output_dir={out}", "eval.before=false", "eval.after=false"])
            start = time.perf_counter()
            results = run_in_process(cfg)
            runs.append((recorder, results, time.perf_counter() - start))
    (first, res1, _), (second, res2, _) = runs
    timing = ("fed/seconds", "fed/client_seconds")  # wall-clock: never repeats
    comm1, comm2 = ({k: v for k, v in r["communication"].items() if k not in timing} for r in (res1, res2))
    same_bytes = first.payloads == second.payloads
    return {
        "job": "smoke (3 steps, G=4, 3 answer-only clients, selector all)",
        **tally(first.pairs),
        "same seed twice: identical reply bytes": same_bytes,
        "same seed twice: identical communication metrics (timings aside)": comm1 == comm2,
        "differing metrics": sorted(k for k in comm1 if comm1[k] != comm2.get(k)),
        "bytes metrics": {k: v for k, v in comm1.items() if "bytes" in k},
    }


def exchange(cfg: Any, split: Any, texts: list[list[str]]) -> list[tuple[Message, Message | None]]:
    """The default run's requests for these candidates (per question, G texts), sent to the real
    answer-based clients: 2 questions per step, each to M of the clients, one request per client."""
    from fedgrpo.client.factory import make_client

    g, m = cfg.num_generations, cfg.federation.experts_per_question
    qs = split.train_questions[: len(texts)]
    clients = {name: make_client(cfg, name, examples, None) for name, examples in split.clients.items()}
    names, pick = sorted(clients), random.Random(cfg.seed)
    pairs: list[tuple[Message, Message | None]] = []
    per_step = cfg.grpo["per_device_train_batch_size"] // g
    for step in range(0, len(qs), per_step):
        asked: dict[str, list[int]] = {}
        for j in range(step, min(step + per_step, len(qs))):
            for name in pick.sample(names, m):
                asked.setdefault(name, []).append(j)
        for name, js in asked.items():
            items = [RewardItem(str(k), qs[j].question, texts[j]) for k, j in enumerate(js)]
            request = RewardRequest(new_request_id(), name, items)
            pairs.append((request, clients[name].respond(request)))
    return pairs


def shape(questions: int) -> dict[str, Any]:
    from fedgrpo.config import load_config
    from fedgrpo.simulation.data import build_data

    cfg = load_config("default")
    split = build_data(cfg)
    g = cfg.num_generations
    texts = [[f"<answer>{k}</answer>" for k in range(g)] for _ in split.train_questions[:questions]]
    return {
        "job": f"default-run shape, {len(texts)} questions x G={g}, default split's 5 clients, no model",
        **tally(exchange(cfg, split, texts)),
    }


def smollm2(questions: int) -> dict[str, Any]:
    import torch

    from fedgrpo.config import load_config
    from fedgrpo.models.loading import load_policy, load_tokenizer
    from fedgrpo.run.evaluate import generate_completions
    from fedgrpo.simulation.data import build_data

    cfg = load_config("default")
    torch.set_num_threads(cfg.run.threads or 2)
    torch.manual_seed(cfg.seed)
    split = build_data(cfg)
    qs = split.train_questions[:questions]
    g = cfg.num_generations
    tokenizer, policy = load_tokenizer(cfg.model.name_or_path), load_policy(cfg.model.name_or_path)
    start = time.perf_counter()
    texts = generate_completions(
        policy,
        tokenizer,
        [q.question for q in qs for _ in range(g)],
        int(cfg.grpo["max_completion_length"]),
        32,
        cfg.model.worked_example,
        desc="candidates",
        temperature=float(cfg.grpo["temperature"]),
    )
    seconds = time.perf_counter() - start
    return {
        "job": f"SmolLM2-135M-Instruct candidates, {len(qs)} questions x G={g}, default split's 5 clients",
        "generation_seconds": round(seconds, 1),
        "mean candidate characters": round(sum(map(len, texts)) / len(texts), 1),
        "a candidate": texts[0],
        **tally(exchange(cfg, split, [texts[j * g : (j + 1) * g] for j in range(len(qs))])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job", choices=["shape", "smoke", "smollm2"])
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    jobs = {
        "shape": lambda: shape(args.questions),
        "smoke": smoke,
        "smollm2": lambda: smollm2(args.questions),
    }
    print(json.dumps(jobs[args.job](), indent=1))


if __name__ == "__main__":
    main()
