"""Deployment Engine against in-process on the same job: seconds per step, bytes per round, start-up.

Sets a deployment up exactly as docs/deployment.md says (its commands, run by the same harness as
``tests/e2e/test_deployment_guide.py``: a TLS SuperLink, three organisations in their own folders,
each serving its model with ``transformers serve``), then trains the job there and, for comparison,
the same job in-process with every client scoring through one of those endpoints
(``clients.endpoint``), so that both runs do the same scoring work (the bench swaps the guide's
stand-in models for that model, served at every organisation, and turns client-2's privacy off).
``--job smoke`` is the tiny model; ``--job smollm2`` puts SmolLM2 behind the endpoints and trains
SmolLM2 with LoRA on the server (the default preset's GRPO settings). It also times a ClientApp's
start-up on the answer-check path (a fresh Python process importing the
ClientApp, building an answer-only client from its data file and answering one reward request),
which Flower 1.41 pays once per message. One JSON line per measurement.

    python bench/deployment_overhead.py --job smoke --steps 4
    python bench/deployment_overhead.py --job smollm2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.e2e.guide import Machines, guide_blocks  # noqa: E402

JOBS = {
    "smoke": [],
    "smollm2": [
        "model.name_or_path=smollm2",
        "model.lora.enabled=true",
        "grpo.num_generations=8",
        "grpo.per_device_train_batch_size=16",
        "grpo.max_completion_length=40",
        "grpo.learning_rate=2e-4",
        "grpo.temperature=0.7",
        "run.threads=2",
        "clients.samples=3",
        "clients.max_new_tokens=16",
        # SmolLM2 scoring a round through three endpoints on shared cores can outlast the guide's 120 s:
        # a reply that expires is work the deployed run skips and the in-process run does
        "flower.reward_timeout_s=1800",
    ],
}
CLIENT_APP_START = """
import json, time, sys
t = time.perf_counter()
from fedgrpo.flower.client_app import client_for, config_from_run_config
from fedgrpo.protocol import RewardItem, RewardRequest
cfg = config_from_run_config({"config": "smoke"})
client = client_for(cfg, {"data-file": sys.argv[1]})
q = client._examples[0].question
client.respond(RewardRequest("r", "c", [RewardItem("k", q, ["<answer>1</answer>"] * 8)]))
heavy = [m for m in ("torch", "transformers", "trl") if m in sys.modules]
print(json.dumps({"seconds": round(time.perf_counter() - t, 3), "heavy_modules": heavy}))
"""


def same_model(party: str, commands: str, model: str) -> str:
    """An organisation's guide block with its model swapped for ``model`` served by ``transformers
    serve`` on its own port and no privacy, so that every party does the in-process run's scoring
    work (the guide's client-0 and client-1 use a stand-in model, client-2 releases with privacy)."""
    if not party.startswith("client-") or "org.yaml" not in commands:
        return commands
    port = 8000 + int(party.removeprefix("client-"))
    serve = (
        f"printf 'model:\\n  serve: %s\\n  port: {port}\\n' \"$(fedgrpo model-folder {model})\" >> org.yaml"
    )
    lines = [
        ln
        for ln in commands.splitlines()
        if not ln.startswith(("printf 'model", "printf '  ", "printf 'node_config"))
    ]
    return "\n".join([lines[0], serve, *lines[1:]]) + "\n"


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def summary(res: dict) -> dict:
    comm = res["communication"]
    return {
        "seconds_per_step": res["seconds_per_step"],
        # the reward exchange's share of a step (routing, every client's scoring through its endpoint,
        # Flower's messages and polling), and how many rounds it took: the rest is the server's own
        # generation and update, the same work in both runs
        "reward_seconds_per_step": round(comm["fed/seconds"] / max(res["steps"], 1), 2),
        "rounds": comm["fed/rounds"],
        "replacements": comm["fed/replacements"],
        "methods": comm["fed/methods"],  # "model": scored through an endpoint (abstentions are "none")
        "bytes_down_per_round": comm["fed/bytes_down_per_round"],
        "bytes_up_per_round": comm["fed/bytes_up_per_round"],
        # read the ratio with these: a reply lost (timed out, refused) is scoring work not done
        "rewards_missing": comm["fed/rewards_missing"],
        "replies_rejected": comm["fed/rejected_total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", choices=sorted(JOBS), default="smoke")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        m = Machines(Path(tmp))
        try:
            blocks = guide_blocks()
            at = next(i for i, (_, c) in enumerate(blocks) if "federation.transport=flower-deployment" in c)
            setup, train = blocks[:at], blocks[at][1]
            model = "smollm2" if args.job == "smollm2" else "tiny-random"
            for party, commands in setup:
                m.sh(party, same_model(party, commands, model))
            extra = [*JOBS[args.job], f"grpo.max_steps={args.steps}", "eval.before=false", "eval.after=false"]
            start = time.perf_counter()
            m.sh("server", re.sub(r"grpo\.max_steps=\d+", " ".join(extra), train), timeout=3600)
            deployed = results(m.folder("server") / "runs" / "demo")
            print(
                json.dumps(
                    {
                        "job": args.job,
                        "where": "deployment",
                        **summary(deployed),
                        "wall_seconds": round(time.perf_counter() - start, 1),
                        "startup_seconds": deployed["transport"]["startup_seconds"],
                    }
                ),
                flush=True,
            )
            folder = m.folder("client-2")
            # the name client-2's server is pinned to: the folder under its own home directory
            model_dir = m.sh("client-2", f"fedgrpo model-folder {model} 2>/dev/null").stdout.strip()
            out = Path(tmp) / "in-process"
            start = time.perf_counter()
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "fedgrpo"),
                    "run",
                    "smoke",
                    f"run.output_dir={out}",
                    *extra,
                    "clients.endpoint=http://127.0.0.1:8002/v1",
                    f"clients.endpoint_model={model_dir}",
                ],
                check=True,
                capture_output=True,
                cwd=folder,
                env=m.env("client-2"),  # the same machine as the endpoint it scores through
            )
            local = results(out)
            print(
                json.dumps(
                    {
                        "job": args.job,
                        "where": "in-process (same endpoint)",
                        **summary(local),
                        "wall_seconds": round(time.perf_counter() - start, 1),
                    }
                ),
                flush=True,
            )
            ratio = deployed["seconds_per_step"] / max(local["seconds_per_step"], 1e-9)
            print(json.dumps({"job": args.job, "deployment_over_in_process": round(ratio, 2)}), flush=True)
            for _ in range(3):
                probe = subprocess.run(
                    [sys.executable, "-c", CLIENT_APP_START, str(folder / "data.jsonl")],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(json.dumps({"client_app_start": json.loads(probe.stdout.strip().splitlines()[-1])}))
        finally:
            m.stop()


if __name__ == "__main__":
    main()
