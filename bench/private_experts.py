"""Private experts: each client's expert trained without privacy and with DP-SGD at several epsilons.

On the default preset's split (the first ``--clients`` of its K=5 non-IID clients, with their own
private examples, and the default SFT recipe: 2 epochs, batch 8, learning rate 1e-3), trains (or
takes from the cache) every expert once without privacy and once per ``--epsilons``
(``clients.expert.dp.target_epsilon`` at delta 1e-5, the noise calibrated to it). Then measures each
expert as a competence query does (its answer, the run's prompt and ``clients.direct_answer``,
against the given answer), greedy, on the run's 30 auxiliary questions and on ``--heldout``
held-out questions of every domain. Prints a markdown table: per setting and client, the noise
multiplier, the epsilon reached, both accuracies and the training time, and per setting the mean
over clients; ``--base`` adds the base model itself (``clients.expert.method: none``) for
reference. The defaults (client-0's expert, 38 examples, 10 steps; 10 held-out questions per
domain) fit 15 minutes on 2 busy cores; ``--clients 5`` is the whole preset (about 5x the time):

    python bench/private_experts.py --clients 1 --heldout 10 --epsilons 8 4 1
    python bench/private_experts.py --clients 1 --heldout 10 --epsilons --base  # the references
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgrpo.client.client import COMPETENCE_CHUNK
from fedgrpo.client.model_scoring import ModelEvaluator
from fedgrpo.client.private_training import training_privacy
from fedgrpo.config import load_config
from fedgrpo.data import Example
from fedgrpo.method.answers import answer_key
from fedgrpo.simulation.clients import client_models, train_client_experts
from fedgrpo.simulation.data import build_data
from fedgrpo.simulation.partition import FederatedSplit


def accuracy(model: ModelEvaluator, examples: list[Example]) -> float:
    """The share of ``examples`` the expert answers right, as a competence query scores it."""
    right = 0
    for begin in range(0, len(examples), COMPETENCE_CHUNK):
        chunk = examples[begin : begin + COMPETENCE_CHUNK]
        answers = model.answers([ex.question for ex in chunk])
        right += sum(
            a is not None and answer_key(a) == answer_key(ex.answer)
            for a, ex in zip(answers, chunk, strict=True)
        )
    return right / len(examples)


def measure(
    overrides: list[str], split: FederatedSplit, clients: list[str], heldout: list[Example]
) -> list[dict]:
    """Train (or find) the experts of one setting and measure each of ``clients``."""
    cfg = load_config("default", [*overrides, "clients.samples=1"])  # greedy: the expert's best answer
    torch.manual_seed(0)
    kept = FederatedSplit(**{**split.__dict__, "clients": {c: split.clients[c] for c in clients}})
    start = time.perf_counter()
    folders, failed = train_client_experts(cfg, kept)
    if failed:
        raise RuntimeError(f"expert training failed: {failed}")
    trained = time.perf_counter() - start
    models, _, _ = client_models(cfg, kept)
    rows = []
    for name in clients:
        model = models[name]
        assert isinstance(model, ModelEvaluator)
        privacy = training_privacy(folders[name])
        rows.append(
            {
                "client": name,
                "noise": privacy.noise_multiplier if privacy else 0.0,
                "epsilon": f"{privacy.epsilon(1e-5):.2f}" if privacy else "none",
                "aux": accuracy(model, list(split.auxiliary)),
                "heldout": accuracy(model, heldout),
                "seconds": trained / len(clients),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1, help="how many of the preset's clients")
    parser.add_argument("--heldout", type=int, default=10, help="held-out questions per domain")
    parser.add_argument("--epsilons", type=float, nargs="*", default=[8.0, 4.0, 1.0])
    parser.add_argument("--base", action="store_true", help="also the base model without an expert")
    parser.add_argument("--no-plain", action="store_true", help="leave out the expert without DP")
    parser.add_argument(
        "--examples", type=int, default=None, help="data.examples_per_client (default: the preset's 40)"
    )
    parser.add_argument(
        "--recipe",
        nargs="*",
        default=[],
        help="config overrides of every DP-SGD expert, e.g. clients.expert.lora_r=1 "
        "clients.expert.dp.lora_last_layers=2 clients.expert.batch_size=1000",
    )
    args = parser.parse_args()
    data = [] if args.examples is None else [f"data.examples_per_client={args.examples}"]
    cfg = load_config("default", data)
    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    split = build_data(cfg)
    clients = list(split.clients)[: args.clients]
    heldout = [ex for examples in split.heldout.values() for ex in examples[: args.heldout]]
    base = {"base model, no expert": ["clients.expert.method=none"]} if args.base else {}
    settings = (
        base
        | ({} if args.no_plain else {"no DP": []})
        | {
            f"DP-SGD, target epsilon {e:g}": [
                "clients.expert.dp.enabled=true",
                f"clients.expert.dp.target_epsilon={e}",
                *args.recipe,
            ]
            for e in args.epsilons
        }
    )
    settings = {label: [*data, *overrides] for label, overrides in settings.items()}
    sizes = ", ".join(f"{c}: {len(split.clients[c])}" for c in clients)
    print(
        f"{len(clients)} clients ({sizes} examples), {len(split.auxiliary)} auxiliary and "
        f"{len(heldout)} held-out questions, delta 1e-5; DP recipe: {' '.join(args.recipe) or 'default'}"
    )
    print(
        "| setting | client | noise multiplier | epsilon | aux accuracy | held-out accuracy "
        "| train s (mean) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, overrides in settings.items():
        rows = measure(overrides, split, clients, heldout)
        for r in rows:
            print(
                f"| {label} | {r['client']} | {r['noise']:.3f} | {r['epsilon']} | {r['aux']:.3f} "
                f"| {r['heldout']:.3f} | {r['seconds']:.0f} |"
            )
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("aux", "heldout")}
        print(f"| **{label}** | mean | | | **{mean['aux']:.3f}** | **{mean['heldout']:.3f}** | |", flush=True)


if __name__ == "__main__":
    main()
