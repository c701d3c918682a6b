"""A client model's work per generated answer: the graph build's competence answers and model scoring.

Builds the default preset's clients (SmolLM2 experts, trained or taken from the cache) and times, in
one process on the same questions and seeds, each client model

* answering the auxiliary set as a competence query does (``answers``, in chunks, with
  ``run.share_prompts``; before: ``answer`` one question at a time, transformers' generate as is);
* scoring G server candidates of training questions it does not hold (agreement: its own samples).

Prints seconds per generated answer (questions x ``clients.samples``) for both paths and the ratio
(before: the full reply through transformers' generate as is, fp32 weights; after: the run's
settings, so ``clients.direct_answer``, ``clients.weights`` and the prompt levers; the client's kept
answers are off, so both paths generate every answer), and the cost when a request carries two
questions the client does not hold (answered in one batch, ``prepare``):

    python bench/client_scoring.py --clients 2 --questions 10
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from fedgrpo.client.client import COMPETENCE_CHUNK
from fedgrpo.client.model_scoring import ModelEvaluator
from fedgrpo.config import load_config
from fedgrpo.simulation.clients import client_models
from fedgrpo.simulation.data import build_data


def _evaluators(cfg, split) -> list[ModelEvaluator]:  # noqa: ANN001
    """Each client's own model, as its dual gate would use it (no client data is needed to time it)."""
    models, _, _ = client_models(cfg, split)
    return [m for m in models.values() if isinstance(m, ModelEvaluator)]


def experts_parser(doc: str, clients: int) -> argparse.ArgumentParser:
    """A bench's arguments over the default experts: a config name, and how many clients."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="default")
    parser.add_argument("--clients", type=int, default=clients, help="how many clients")
    return parser


def parse_and_build(parser: argparse.ArgumentParser):  # noqa: ANN201
    """The bench's arguments, torch's threads as the run sets them, and the split."""
    args = parser.parse_args()
    cfg = load_config(args.config, [])
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    return args, cfg, build_data(cfg)


def main() -> None:
    parser = experts_parser(__doc__, clients=2)
    parser.add_argument("--questions", type=int, default=10, help="training questions scored per client")
    args, cfg, split = parse_and_build(parser)
    # before: the same experts with their weights as loaded (their own base, so the run's is untouched)
    plain = _evaluators(load_config(args.config, ["clients.weights=fp32"]), split)[: args.clients]
    evaluators = _evaluators(cfg, split)[: args.clients]
    auxiliary = [ex.question for ex in split.auxiliary]
    questions = [q.question for q in split.train_questions[: args.questions]]
    candidates = [f"{i} + 1 = {i + 1}. <answer>{i + 1}</answer>" for i in range(cfg.grpo["num_generations"])]
    samples = cfg.clients.samples
    rows = []
    for before, after in zip(plain, evaluators, strict=True):
        timings = {}
        # every pass generates (no answer kept from the pass before); "before": transformers' generate
        # as is, the full reply
        before.settings = replace(before.settings, cache_size=0, direct_answer=False)
        after.settings = replace(after.settings, cache_size=0)
        before.share_prompts = False
        for shared, ev in ((False, before), (True, after)):
            start = time.perf_counter()
            if shared:
                for i in range(0, len(auxiliary), COMPETENCE_CHUNK):
                    ev.answers(auxiliary[i : i + COMPETENCE_CHUNK])
            else:
                for q in auxiliary:
                    ev.answer(q)
            graph = time.perf_counter() - start
            start = time.perf_counter()
            for q in questions:
                ev.evaluate(q, candidates)
            scoring = time.perf_counter() - start
            timings[shared] = (graph / (len(auxiliary) * samples), scoring / (len(questions) * samples))
        # A request of two questions the client does not hold, as the default run sends its most
        # competent clients: both answered in one batch (``prepare``, which keeps the answers).
        after.settings, after._references = (
            replace(after.settings, cache_size=4096),
            type(after._references)(),
        )
        start = time.perf_counter()
        for i in range(0, len(questions) - 1, 2):
            after.prepare(questions[i : i + 2])
            for q in questions[i : i + 2]:
                after.evaluate(q, candidates)
        paired = (time.perf_counter() - start) / ((len(questions) // 2) * 2 * samples)
        after.settings = replace(after.settings, cache_size=0)
        rows.append((after.adapter, timings, paired))
    print(f"{len(auxiliary)} auxiliary questions, {len(questions)} scored questions, {samples} samples each")
    print(
        "| client | graph build s/answer before -> after | x | scoring s/answer before -> after | x "
        "| scoring, 2 questions a request: after | x |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, t, paired in rows:
        (g0, s0), (g1, s1) = t[False], t[True]
        print(
            f"| {name} | {g0:.3f} -> {g1:.3f} | {g0 / g1:.1f} | {s0:.3f} -> {s1:.3f} | {s0 / s1:.1f} "
            f"| {paired:.3f} | {s0 / paired:.1f} |"
        )


if __name__ == "__main__":
    main()
