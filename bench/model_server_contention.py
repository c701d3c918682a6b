"""Three `transformers serve` SmolLM2 servers on one machine (as bench/deployment_overhead.py runs
three organisations): 9 chat requests of 16 tokens, one after another, then three at a time (one
stream per server). The ratio is what co-locating the organisations' model servers costs
(docs/performance.md, "Transports").

    python bench/model_server_contention.py
"""

import concurrent.futures as cf
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> None:
    folder = subprocess.run(
        [str(BIN / "fedgrpo"), "model-folder", "smollm2"], capture_output=True, text=True
    ).stdout.strip()
    procs = [
        subprocess.Popen(
            [str(BIN / "transformers"), "serve", folder, "--device", "cpu", "--port", str(8020 + i)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(3)
    ]

    def ask(port: int) -> float:
        body = json.dumps(
            {
                "model": folder,
                "messages": [
                    {"role": "user", "content": "What is 17 + 25? Answer in <answer></answer> tags."}
                ],
                "max_tokens": 16,
                "temperature": 0.7,
                "generation_config": json.dumps({"do_sample": True}),
            }
        ).encode()
        t = time.perf_counter()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
        return time.perf_counter() - t

    try:
        for port in (8020, 8021, 8022):
            for _ in range(120):
                try:
                    ask(port)
                    break
                except Exception:
                    time.sleep(2)
        seq = [ask(p) for p in (8020, 8021, 8022) for _ in range(3)]
        print("sequential 9 requests:", round(sum(seq), 2), [round(x, 2) for x in seq], flush=True)
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(3) as ex:
            per = list(ex.map(lambda p: sum(ask(p) for _ in range(3)), (8020, 8021, 8022)))
        print(
            "concurrent 3x3 requests: wall",
            round(time.perf_counter() - t, 2),
            [round(x, 2) for x in per],
            flush=True,
        )
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
