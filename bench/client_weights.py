"""Client models with fp16 weights (``clients.weights: fp16``) against fp32: the same replies?

For each default expert, on the auxiliary set and ``--heldout`` held-out questions per domain, in
competence-query chunks (``answers``, the run's prompt levers and ``clients.direct_answer``), prints
how many replies the fp16-weight model gives exactly as the fp32 one, greedy and sampled with the
run's settings (seeded alike), how many greedy replies are correct, seconds per answer of both, the
process's resident memory with each, and how long packing took (the experts' shared base is packed
in place, as in a run):

    python bench/client_weights.py --clients 5 --heldout 30
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from client_scoring import _evaluators, experts_parser, parse_and_build  # noqa: E402

from fedgrpo.accel.fp16_weights import pack_fp16_weights  # noqa: E402
from fedgrpo.client.client import COMPETENCE_CHUNK  # noqa: E402
from fedgrpo.client.model_scoring import ModelEvaluator  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402
from fedgrpo.method.answers import is_correct  # noqa: E402


def _replies(ev: ModelEvaluator, questions: list[str], samples: int) -> tuple[list[str], float]:
    ev.samples, ev.cache_size = samples, 0
    start = time.perf_counter()
    texts = []
    for i in range(0, len(questions), COMPETENCE_CHUNK):
        texts += ev._sample(questions[i : i + COMPETENCE_CHUNK])
    return texts, (time.perf_counter() - start) / len(texts)


def _resident() -> str:
    """This process's resident memory: anonymous (tensors) and file-backed (mapped model files)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    anon, file = (int(fields[k].split()[0]) / 2**20 for k in ("RssAnon", "RssFile"))
    return f"{anon:.2f} GB anonymous + {file:.2f} GB file-backed"


def main() -> None:
    parser = experts_parser(__doc__, clients=5)
    parser.add_argument("--heldout", type=int, default=30, help="held-out questions per domain")
    args, cfg, split = parse_and_build(parser)
    examples = list(split.auxiliary) + [ex for d in split.heldout.values() for ex in d[: args.heldout]]
    questions = [ex.question for ex in examples]
    samples = cfg.clients.samples
    experts = _evaluators(load_config(args.config, ["clients.weights=fp32"]), split)[: args.clients]
    # every expert in fp32, then their shared base packed in place, as clients.weights: fp16 does
    replies: dict[str, list[tuple[tuple[list[str], float], tuple[list[str], float]]]] = {}
    for weights in ("fp32", "fp16"):
        if weights == "fp16":
            start = time.perf_counter()
            layers = pack_fp16_weights(experts[0].model)
            print(f"packing {layers} layers took {time.perf_counter() - start:.1f} s")
        for ev in experts:
            ev._prompts.forget()  # kept prompt starts hold the other weights' caches
            replies.setdefault(ev.adapter, []).append(
                (_replies(ev, questions, 1), _replies(ev, questions, samples))
            )
        print(f"resident memory with {weights} weights: {_resident()}")
    print(f"{len(questions)} questions (auxiliary and held-out), {samples} samples when sampled")
    print(
        "| client | greedy: same reply | correct fp32 / fp16 | sampled: same reply "
        "| s per answer fp32 / fp16 |"
    )
    print("|---|---|---|---|---|")
    for name, ((greedy32, sampled32), (greedy16, sampled16)) in replies.items():
        (g32, t32), (g16, t16) = greedy32, greedy16
        same = sum(x == y for x, y in zip(g32, g16, strict=True))
        right = [sum(is_correct(ex, t) for ex, t in zip(examples, g, strict=True)) for g in (g32, g16)]
        s_same = sum(x == y for x, y in zip(sampled32[0], sampled16[0], strict=True))
        per32 = (t32 + sampled32[1] * samples) / (1 + samples)
        per16 = (t16 + sampled16[1] * samples) / (1 + samples)
        print(
            f"| {name} | {same} / {len(g32)} | {right[0]} / {right[1]} | "
            f"{s_same} / {len(sampled32[0])} | {per32:.3f} / {per16:.3f} ({per32 / per16:.1f}x) |"
        )


if __name__ == "__main__":
    main()
