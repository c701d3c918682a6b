"""Bytes on the wire: uplink bytes per reward and downlink bytes per candidate, protocol v2 against v3.

v2 (the encoding before issue 13) was one compact JSON object per message, every item keyed and
every reward a JSON number; this bench rebuilds that size from the same messages
(:func:`v2_bytes`). v3 is :func:`fedgrpo.protocol.encode`: a JSON header line and a packed body.

``smoke``: a whole `fedgrpo run smoke` in this process (tiny random policy, 3 answer-only clients),
every message recorded at the transport; run twice with the same seed to show the bytes, the
rewards and the training metrics repeat exactly.

``smollm2``: G=8 candidates of the embedded SmolLM2-135M-Instruct (the default run's policy and
sampling: 40 new tokens, temperature 0.7) for N training questions of the default split, sent as
the default run does (2 questions per step, each to M=2 of the 5 clients, one request per client
per step), scored by the 5 clients' answers; downlink also compared with lzma (raw, preset 9e).

    python bench/wire_bytes.py smoke
    python bench/wire_bytes.py smollm2 --questions 40
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import lzma
import random
import tempfile
import time
import zlib
from collections.abc import Iterable
from typing import Any

from fedgrpo.protocol import Message, RewardItem, RewardReply, RewardRequest, encode
from fedgrpo.transport import InProcessTransport


def v2_bytes(message: Message) -> int:
    """The size of ``message`` in protocol v2: one compact JSON object, items keyed, rewards as numbers."""
    body = dataclasses.asdict(message)
    body["v"] = 2
    if body.get("privacy_spent", 0) is None:  # v2 left an absent spend out
        del body["privacy_spent"]
    if isinstance(message, RewardReply):
        body.pop("bonus")
        for item in body["items"]:
            if item["method"] is None:
                del item["method"]
    return len(json.dumps(body, separators=(",", ":"), allow_nan=True).encode())


def body_of(payload: bytes) -> tuple[int, bytes]:
    """The header line's length (with its newline) and the body, inflated."""
    line, _, body = payload.partition(b"\n")
    if json.loads(line).get("z") == 1:
        body = zlib.decompress(body)
    return len(line) + 1, body


def lzma_bytes(data: bytes) -> int:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))


def tally(pairs: Iterable[tuple[Message, Message | None]]) -> dict[str, Any]:
    """Bytes per candidate down and per reward up, v2 against v3, over (request, reply) pairs."""
    t: dict[str, Any] = dict.fromkeys(
        [
            "requests",
            "replies",
            "candidates",
            "rewards",
            "v2_down",
            "v3_down",
            "v3_down_header",
            "v3_down_plain",
            "v3_down_lzma",
            "v2_up",
            "v3_up",
            "v3_up_header",
        ],
        0,
    )
    for request, reply in pairs:
        if not isinstance(request, RewardRequest):
            continue
        payload = encode(request)
        header, body = body_of(payload)
        t["requests"] += 1
        t["candidates"] += sum(len(i.candidates) for i in request.items)
        t["v2_down"] += v2_bytes(request)
        t["v3_down"] += len(payload)
        t["v3_down_header"] += header
        t["v3_down_plain"] += header + len(body)
        t["v3_down_lzma"] += header + min(len(body), lzma_bytes(body))
        if isinstance(reply, RewardReply):
            up = encode(reply)
            t["replies"] += 1
            t["rewards"] += sum(len(i.rewards) for i in reply.items)
            t["v2_up"] += v2_bytes(reply)
            t["v3_up"] += len(up)
            t["v3_up_header"] += body_of(up)[0]
    n, r = max(t["candidates"], 1), max(t["rewards"], 1)
    t["down_per_candidate"] = {
        "v2": round(t["v2_down"] / n, 1),
        "v3 (zlib where it pays)": round(t["v3_down"] / n, 1),
        "v3 uncompressed": round(t["v3_down_plain"] / n, 1),
        "v3 with lzma instead": round(t["v3_down_lzma"] / n, 1),
        "v3 header per request": round(t["v3_down_header"] / max(t["requests"], 1), 1),
    }
    t["up_per_reward"] = {
        "v2": round(t["v2_up"] / r, 2),
        "v3": round(t["v3_up"] / r, 2),
        "v3 body only": round((t["v3_up"] - t["v3_up_header"]) / r, 3),
        "v3 header per reply": round(t["v3_up_header"] / max(t["replies"], 1), 1),
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


def smollm2(questions: int) -> dict[str, Any]:
    import torch

    from fedgrpo.client.factory import make_client
    from fedgrpo.config import load_config
    from fedgrpo.models.loading import load_policy, load_tokenizer
    from fedgrpo.run.evaluate import generate_completions
    from fedgrpo.simulation.data import build_data

    cfg = load_config("default")
    torch.set_num_threads(cfg.run.threads or 2)
    torch.manual_seed(cfg.seed)
    split = build_data(cfg)
    qs = split.train_questions[:questions]
    g, m = cfg.num_generations, cfg.federation.experts_per_question
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
            items = [RewardItem(str(k), qs[j].question, texts[j * g : (j + 1) * g]) for k, j in enumerate(js)]
            request = RewardRequest(f"r{step}-{name}", name, items)
            pairs.append((request, clients[name].respond(request)))
    sample = texts[0]
    return {
        "job": f"SmolLM2-135M-Instruct candidates, {len(qs)} questions x G={g}, default split's 5 clients",
        "generation_seconds": round(seconds, 1),
        "mean candidate characters": round(sum(map(len, texts)) / len(texts), 1),
        "a candidate": sample,
        **tally(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job", choices=["smoke", "smollm2"])
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    result = smoke() if args.job == "smoke" else smollm2(args.questions)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
