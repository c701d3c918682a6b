"""Client models with fp16 weights (``clients.weights: fp16``) against fp32: the same replies?

For each default expert, on the auxiliary set and ``--heldout`` held-out questions per domain, in
competence-query chunks (``answers``, the run's prompt levers and ``clients.direct_answer``), prints
how many replies the fp16-weight model gives exactly as the fp32 one, greedy and sampled with the
run's settings (seeded alike), how many greedy replies are correct, and seconds per answer of both:

    python bench/client_weights.py --clients 5 --heldout 30
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from client_scoring import _evaluators, experts_parser, parse_and_build  # noqa: E402

from fedgrpo.answers import is_correct  # noqa: E402
from fedgrpo.client.client import COMPETENCE_CHUNK  # noqa: E402
from fedgrpo.client.model_scoring import ModelEvaluator  # noqa: E402
from fedgrpo.config import load_config  # noqa: E402


def _replies(ev: ModelEvaluator, questions: list[str], samples: int) -> tuple[list[str], float]:
    ev.samples, ev.cache_size = samples, 0
    start = time.perf_counter()
    texts = []
    for i in range(0, len(questions), COMPETENCE_CHUNK):
        texts += ev._sample(questions[i : i + COMPETENCE_CHUNK])
    return texts, (time.perf_counter() - start) / len(texts)


def main() -> None:
    parser = experts_parser(__doc__, clients=5)
    parser.add_argument("--heldout", type=int, default=30, help="held-out questions per domain")
    args, cfg, split = parse_and_build(parser)
    examples = list(split.auxiliary) + [ex for d in split.heldout.values() for ex in d[: args.heldout]]
    questions = [ex.question for ex in examples]
    samples = cfg.clients.samples
    fp32, fp16 = (
        _evaluators(load_config(args.config, [f"clients.weights={w}"]), split)[: args.clients]
        for w in ("fp32", "fp16")
    )
    print(f"{len(questions)} questions (auxiliary and held-out), {samples} samples when sampled")
    print(
        "| client | greedy: same reply | correct fp32 / fp16 | sampled: same reply "
        "| s per answer fp32 / fp16 |"
    )
    print("|---|---|---|---|---|")
    for a, b in zip(fp32, fp16, strict=True):
        greedy = [_replies(ev, questions, 1) for ev in (a, b)]
        sampled = [_replies(ev, questions, samples) for ev in (a, b)]
        (g32, t32), (g16, t16) = greedy
        same = sum(x == y for x, y in zip(g32, g16, strict=True))
        right = [sum(is_correct(ex, t) for ex, t in zip(examples, g, strict=True)) for g in (g32, g16)]
        s_same = sum(x == y for x, y in zip(sampled[0][0], sampled[1][0], strict=True))
        per32 = (t32 + sampled[0][1] * samples) / (1 + samples)
        per16 = (t16 + sampled[1][1] * samples) / (1 + samples)
        print(
            f"| {a.adapter} | {same} / {len(g32)} | {right[0]} / {right[1]} | "
            f"{s_same} / {len(sampled[0][0])} | {per32:.3f} / {per16:.3f} ({per32 / per16:.1f}x) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
