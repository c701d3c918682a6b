"""The ``dpsda-fl`` baseline: clients release differentially private votes on synthetic data, the server
evolves that data with Private Evolution (:mod:`fedgrpo.baselines.private_evolution`) and trains on it.

RANDOM_API: the server policy, shown ``dpsda.fewshot`` of the server's own auxiliary examples of one
domain, writes a new question and its ``<answer>``. Each iteration every client returns a noisy
nearest-neighbour vote histogram over the samples (its only release); the server sums, thresholds and
keeps the best-voted samples, and VARIATION_API (the policy rewrites a sample) refills the population.
After T iterations the kept samples are the synthetic set (``synthetic.jsonl``); the server trains on
it with SFT, then GRPO rewarded by the synthetic answers, and is evaluated as FedGRPO is.

Same config, seeded split, held-out sets and evaluation as a FedGRPO run; ``results.json`` has
FedGRPO's keys plus ``privacy`` and ``synthetic``. ``--resume`` reuses a finished evolution
(``synthetic.jsonl``, ``privacy.json``): asking the clients again would spend more privacy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, set_seed

from fedgrpo.answers import ANSWER_RE, extract_answer
from fedgrpo.baselines.private_evolution import (
    Sample,
    VotingClient,
    calibrate_sigma,
    decode_histogram,
    encode_request,
    epsilon_spent,
    kept_per_iteration,
    sample_text,
    top_voted,
)
from fedgrpo.client.experts import answer_reward, grpo_dataset, sft_dataset
from fedgrpo.config import ConfigError, DpsdaSettings, FedGRPOConfig
from fedgrpo.config.sections import DEFAULT_NOISE_MULTIPLIER
from fedgrpo.data import Example, derive_seed
from fedgrpo.evaluate import DomainAccuracy, accuracy_table, evaluate_policy, generate_completions, to_json
from fedgrpo.io import write_json_atomic
from fedgrpo.models import load_policy, load_tokenizer
from fedgrpo.run.assemble import build_data, split_summary
from fedgrpo.run.experiment import RunExists, attach_log_file, check_output_dir
from fedgrpo.run.metrics import peak_rss_mb
from fedgrpo.run.trl import lora_config
from fedgrpo.selection import mean_pooled_embedder
from fedgrpo.server.stats import TRANSFER_KEYS, RoundStats

log = logging.getLogger(__name__)

SYNTHETIC_FILE = "synthetic.jsonl"
PRIVACY_FILE = "privacy.json"
EVOLUTION_FILE = "evolution.jsonl"  # per iteration: the samples, the summed noisy votes, bytes
COMMUNICATION_KEYS = (*TRANSFER_KEYS, "fed/rejected", "fed/rejected_total")  # and the bad histograms
MAX_QUESTION_CHARS = 1000

# A vote request's bytes -> per client asked, its reply's bytes or why it gave none.
VoteExchange = Callable[[bytes], dict[str, bytes | BaseException]]


def privacy_plan(settings: DpsdaSettings) -> dict[str, Any]:
    """The noise multiplier (given, default or calibrated to the target) and the epsilon it spends."""
    p = settings
    sigma = p.noise_multiplier
    if sigma is None and p.target_epsilon is not None:
        try:
            sigma = calibrate_sigma(p.target_epsilon, p.iterations, p.delta, p.accountant)
        except Exception as err:  # dp-accounting finds no sigma (>= 0.25) that reaches the target
            raise ConfigError(
                f"dpsda.target_epsilon={p.target_epsilon}: no noise multiplier reaches it over "
                f"{p.iterations} iterations at delta={p.delta} ({err})"
            ) from err
    sigma = DEFAULT_NOISE_MULTIPLIER if sigma is None else sigma
    return {
        "mechanism": "Private Evolution: Gaussian-noised nearest-neighbour vote histogram per client",
        "accountant": p.accountant,
        "noise_multiplier": sigma,
        "sensitivity": 1.0,
        "iterations": p.iterations,
        "delta": p.delta,
        "epsilon": epsilon_spent(sigma, p.iterations, p.delta, p.accountant),
        "target_epsilon": p.target_epsilon,
    }


def check_settings(cfg: FedGRPOConfig) -> None:
    """Checks across sections, before any model loads."""
    if cfg.federation.transport not in ("in_process", "flower-simulation"):
        raise ConfigError(
            "dpsda-fl runs in process or on Flower's Simulation Engine: set federation.transport to "
            "in_process or flower-simulation"
        )
    if cfg.data.num_auxiliary < 1:
        raise ConfigError(
            "dpsda needs data.num_auxiliary >= 1: the server's auxiliary examples are its few-shot prompts"
        )


def run(cfg: FedGRPOConfig, resume: bool = False, exchange: VoteExchange | None = None) -> dict[str, Any]:
    """A whole dpsda-fl run into ``cfg.output_dir``; returns the results also saved there.

    ``exchange``: how vote requests reach the clients (Flower's, from :mod:`.dpsda_flower`); None: the
    split's clients in this process (:func:`fedgrpo.baselines.run_method` picks this or the Flower run).
    """
    check_settings(cfg)
    if exchange is None and cfg.federation.transport != "in_process":
        raise ConfigError("this runs dpsda-fl in process; for Flower use fedgrpo run CONFIG method=dpsda-fl")
    privacy = privacy_plan(cfg.dpsda)
    check_output_dir(cfg, resume)
    out = cfg.output_dir
    if not resume and (out / SYNTHETIC_FILE).exists():
        raise RunExists(f"{out} already holds a run; pass --resume to continue it or set run.output_dir")
    split = build_data(cfg)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "run.log")
    try:
        return _run(cfg, split, privacy, resume, exchange)
    except BaseException:
        if created and not (out / SYNTHETIC_FILE).exists():
            logging.getLogger("fedgrpo").removeHandler(handler)
            handler.close()
            shutil.rmtree(out, ignore_errors=True)
            log.error("the run failed before its synthetic set was released; removed %s", out)
        raise


def _run(
    cfg: FedGRPOConfig, split: Any, privacy: dict[str, Any], resume: bool, exchange: VoteExchange | None
) -> dict[str, Any]:
    out = cfg.output_dir
    (out / "config.yaml").write_text(cfg.to_yaml())
    set_seed(cfg.seed)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split_info = split_summary(split)
    write_json_atomic(out / "split.json", split_info)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_policy(cfg.model.name_or_path, cfg.model.dtype)

    def evaluate(policy: Any, tag: str) -> dict[str, DomainAccuracy]:
        ev = cfg.eval
        res = evaluate_policy(
            policy,
            tokenizer,
            split.heldout,
            ev.max_new_tokens,
            ev.batch_size,
            cfg.model.worked_example,
            ev.max_per_domain,
            share_prompts=cfg.run.share_prompts,
        )
        write_json_atomic(out / f"eval_{tag}.json", to_json(res))
        return res

    before_path = out / "eval_before.json"
    before = None
    if cfg.eval.before and resume and before_path.exists():
        before = {k: DomainAccuracy(**v) for k, v in json.loads(before_path.read_text()).items()}
    elif cfg.eval.before:
        before = evaluate(model, "before")

    if resume and (out / SYNTHETIC_FILE).exists() and (out / PRIVACY_FILE).exists():
        log.info(
            "resuming: the synthetic set in %s was released already; the clients are not asked again", out
        )
        synthetic = read_synthetic(out / SYNTHETIC_FILE)
        released = json.loads((out / PRIVACY_FILE).read_text())
        privacy, comm = released["privacy"], RoundStats.from_json(released["communication"])
    else:
        ask = exchange or in_process_exchange(
            voting_clients(cfg, split.clients, tokenizer, privacy["noise_multiplier"])
        )
        synthetic, comm = evolve(cfg, model, tokenizer, split.auxiliary, ask, out)
        write_synthetic(out / SYNTHETIC_FILE, synthetic)
        write_json_atomic(out / PRIVACY_FILE, {"privacy": privacy, "communication": comm.to_json()})
        del ask
    log.info(
        "privacy: each client spent epsilon=%.3f at delta=%g (%s accountant, sigma=%.3f, %d iterations)",
        privacy["epsilon"],
        privacy["delta"],
        privacy["accountant"],
        privacy["noise_multiplier"],
        privacy["iterations"],
    )

    examples = [Example(f"syn-{i}", s.domain, s.question, s.answer) for i, (s, _) in enumerate(synthetic)]
    if unanswered := sum(not ex.answer for ex in examples):
        # said loudly: SFT then teaches an empty tag and GRPO can reward only the format; with none
        # answered the policy collapses (the full suite's dpsda-fl run on SmolLM2-135M did)
        log.warning(
            "%d of %d synthetic samples have no answer: training on them teaches only the answer format",
            unanswered,
            len(examples),
        )
    start = time.perf_counter()
    model, sft_steps = train_sft(cfg, model, tokenizer, examples, out / "sft")
    model, grpo_steps = train_grpo(cfg, model, tokenizer, examples, out / "grpo")
    train_seconds = time.perf_counter() - start
    model.save_pretrained(str(out / "final"))
    after = evaluate(model, "after") if cfg.eval.after else None
    steps = sft_steps + grpo_steps
    summary = comm.summary()
    results = {
        "name": cfg.name,
        "method": "dpsda",
        "steps": steps,
        "sft_steps": sft_steps,
        "grpo_steps": grpo_steps,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(steps, 1), 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "before": to_json(before),
        "after": to_json(after),
        "communication": {k: summary[k] for k in COMMUNICATION_KEYS},
        "selection": None,  # every client votes on every sample: no expert selection
        "privacy": privacy,
        "synthetic": {
            "samples": len(examples),
            "with_answer": sum(bool(ex.answer) for ex in examples),
            "file": SYNTHETIC_FILE,
        },
        "split": split_info,
        "transport": {"kind": cfg.federation.transport, "clients": len(split.clients)},
    }
    write_json_atomic(out / "results.json", results)
    log.info(
        "\n%s\ncommunication: %d PE iterations, %.1f KB down, %.1f KB up; "
        "epsilon %.3f at delta %g\nresults: %s",
        accuracy_table(before, after),
        comm.rounds,
        comm.bytes_down / 1e3,
        comm.bytes_up / 1e3,
        privacy["epsilon"],
        privacy["delta"],
        out / "results.json",
    )
    return results


# ---- Private Evolution's server side --------------------------------------------------------------


def evolve(
    cfg: FedGRPOConfig,
    policy: Any,
    tokenizer: Any,
    auxiliary: list[Example],
    ask: VoteExchange,
    out: Path,
) -> tuple[list[tuple[Sample, float]], RoundStats]:
    """T vote iterations; returns the final kept samples with their summed noisy votes, and the cost."""
    p = cfg.dpsda
    rng = random.Random(derive_seed("dpsda-proposals", cfg.seed))
    torch.manual_seed(derive_seed("dpsda-generation", cfg.seed) % 2**32)
    population = propose(cfg, policy, tokenizer, auxiliary, p.samples, rng)
    keep = kept_per_iteration(p.samples, p.variations)
    stats = RoundStats()
    (out / EVOLUTION_FILE).unlink(missing_ok=True)
    for t in range(1, p.iterations + 1):
        start = time.perf_counter()
        histogram, bytes_down, bytes_up = collect_votes(t, population, ask, stats)
        kept = top_voted(histogram, p.threshold, keep)
        stats.rounds += 1
        stats.seconds += time.perf_counter() - start
        row = {
            "iteration": t,
            "samples": [dataclasses.asdict(s) for s in population],
            "votes": [round(float(v), 4) for v in histogram],
            "kept": kept,
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
        }
        with (out / EVOLUTION_FILE).open("a") as f:
            f.write(json.dumps(row) + "\n")
        log.info(
            "PE iteration %d/%d: %d samples, votes above threshold %d, kept %d, %d B down, %d B up",
            t,
            p.iterations,
            len(population),
            int((histogram >= p.threshold).sum()),
            len(kept),
            bytes_down,
            bytes_up,
        )
        if t == p.iterations:
            return [(population[i], float(histogram[i])) for i in kept], stats
        survivors = [population[i] for i in kept]
        population = (survivors + vary(cfg, policy, tokenizer, survivors))[: p.samples]
    raise AssertionError("unreachable: iterations >= 1")


def voting_clients(
    cfg: FedGRPOConfig, clients: dict[str, list[Example]], tokenizer: Any, sigma: float
) -> list[VotingClient]:
    """The clients' side of PE: each with its own examples, the frozen encoder (the server policy's
    base, loaded once) and noise multiplier ``sigma`` (:func:`privacy_plan`)."""
    encoder = load_policy(cfg.model.name_or_path, cfg.model.dtype)
    encoder.requires_grad_(False)
    embed = mean_pooled_embedder(encoder, tokenizer)
    return [
        VotingClient(name, examples, embed, sigma, derive_seed("dpsda", name, cfg.seed), cfg.dpsda.iterations)
        for name, examples in clients.items()
    ]


def in_process_exchange(clients: list[VotingClient]) -> VoteExchange:
    """Each client's reply to a vote request, or the exception it raised, keyed by its name."""

    def ask(request: bytes) -> dict[str, bytes | BaseException]:
        replies: dict[str, bytes | BaseException] = {}
        for client in clients:
            try:
                replies[client.name] = client.handle(request)
            except Exception as err:
                replies[client.name] = err
        return replies

    return ask


def collect_votes(
    iteration: int, population: list[Sample], ask: VoteExchange, stats: RoundStats
) -> tuple[np.ndarray, int, int]:
    """Every client's noisy histogram, summed; a reply that fails its check is logged, counted, left out."""
    request = encode_request(iteration, population)
    total = np.zeros(len(population))
    bytes_down = bytes_up = 0
    for name, reply in ask(request).items():
        bytes_down += len(request)
        stats.bytes_down_per_client[name] += len(request)
        if isinstance(reply, BaseException):
            stats.rejected["client_error"] += 1
            log.error(
                "PE iteration %d: client %s failed: %s: %s", iteration, name, type(reply).__name__, reply
            )
            continue
        bytes_up += len(reply)
        stats.bytes_up_per_client[name] += len(reply)
        try:
            total += decode_histogram(reply, len(population))
        except ValueError as err:
            stats.rejected["bad_histogram"] += 1
            log.error("PE iteration %d: rejected client %s's histogram: %s", iteration, name, err)
    stats.bytes_down += bytes_down
    stats.bytes_up += bytes_up
    return total, bytes_down, bytes_up


def proposal_prompt(demos: list[Example]) -> str:
    shown = "\n\n".join(sample_text(d.question, d.answer) for d in demos)
    return (
        f"Here are questions with their answers:\n\n{shown}\n\n"
        "Write one new question of the same kind, then its answer, in the same format."
    )


def variation_prompt(sample: Sample) -> str:
    return (
        "Rewrite this question with other numbers or words, then give its answer, in the same format:"
        f"\n\n{sample_text(sample.question, sample.answer)}"
    )


def parse_sample(text: str, domain: str) -> Sample:
    """A generated sample: the question before the answer tag, the tagged answer ("" when none).

    A small model's output may follow no format; it is kept as it is (the votes judge it).
    """
    head = ANSWER_RE.split(text, maxsplit=1)[0] if ANSWER_RE.search(text) else text
    head = head.rsplit("Question:", 1)[-1].rsplit("Answer:", 1)[0].strip()
    question = (head or text.strip() or "?")[:MAX_QUESTION_CHARS]
    return Sample(question, extract_answer(text) or "", domain)


def _generate(cfg: FedGRPOConfig, policy: Any, tokenizer: Any, prompts: list[str], desc: str) -> list[str]:
    p = cfg.dpsda
    return generate_completions(
        policy,
        tokenizer,
        prompts,
        p.max_new_tokens,
        cfg.eval.batch_size,
        worked_example=False,
        desc=desc,
        temperature=p.temperature,
        share_prompts=cfg.run.share_prompts,
    )


def propose(
    cfg: FedGRPOConfig, policy: Any, tokenizer: Any, auxiliary: list[Example], n: int, rng: random.Random
) -> list[Sample]:
    """RANDOM_API: ``n`` samples, the domains taking turns, each from a few of their auxiliary examples."""
    by_domain: dict[str, list[Example]] = {}
    for ex in auxiliary:
        by_domain.setdefault(ex.domain, []).append(ex)
    domains = sorted(by_domain)
    chosen = [domains[i % len(domains)] for i in range(n)]
    prompts = [
        proposal_prompt(rng.sample(by_domain[d], min(cfg.dpsda.fewshot, len(by_domain[d])))) for d in chosen
    ]
    texts = _generate(cfg, policy, tokenizer, prompts, "PE proposals")
    return [parse_sample(text, d) for text, d in zip(texts, chosen, strict=True)]


def vary(cfg: FedGRPOConfig, policy: Any, tokenizer: Any, survivors: list[Sample]) -> list[Sample]:
    """VARIATION_API: ``dpsda.variations`` rewrites of every surviving sample."""
    parents = [s for s in survivors for _ in range(cfg.dpsda.variations)]
    texts = _generate(cfg, policy, tokenizer, [variation_prompt(s) for s in parents], "PE variations")
    return [parse_sample(text, s.domain) for text, s in zip(texts, parents, strict=True)]


def write_synthetic(path: Path, synthetic: list[tuple[Sample, float]]) -> None:
    lines = [json.dumps({**dataclasses.asdict(s), "votes": round(v, 4)}) + "\n" for s, v in synthetic]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def read_synthetic(path: Path) -> list[tuple[Sample, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(Sample(r["question"], r["answer"], r["domain"]), float(r["votes"])) for r in rows]


# ---- the server's training on the synthetic set ---------------------------------------------------


def train_sft(
    cfg: FedGRPOConfig, model: Any, tokenizer: Any, examples: list[Example], out: Path
) -> tuple[Any, int]:
    """``dpsda.sft_steps`` of TRL SFT on prompt -> ``<answer>..</answer>`` (the client experts' rows)."""
    p = cfg.dpsda
    if p.sft_steps == 0:
        return model, 0
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=p.sft_steps,
        learning_rate=p.sft_learning_rate,
        per_device_train_batch_size=p.sft_batch_size,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        use_cpu=cfg.run.device == "cpu",
        bf16=False,
        disable_tqdm=True,
        max_length=512,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(examples, cfg.model.worked_example),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model.lora) if cfg.model.lora.enabled else None,
    )
    trainer.remove_callback(PrinterCallback)  # our log lines report progress, not printed dicts
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return trainer.model, trainer.state.global_step


def train_grpo(
    cfg: FedGRPOConfig, model: Any, tokenizer: Any, examples: list[Example], out: Path
) -> tuple[Any, int]:
    """GRPO with FedGRPO's ``grpo`` settings, rewarded by the synthetic answers (exact answer + format)."""
    steps = cfg.dpsda.grpo_steps
    if steps == 0:
        return model, 0
    from peft import PeftModel
    from transformers.trainer_utils import SaveStrategy
    from trl import GRPOTrainer

    if steps is not None:
        cfg = cfg.model_copy(update={"grpo": {**cfg.grpo, "max_steps": steps}})
    args = cfg.grpo_arguments(out)
    args.save_strategy = SaveStrategy.NO  # one short training after the release: nothing to resume
    fresh_lora = cfg.model.lora.enabled and not isinstance(model, PeftModel)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[answer_reward(examples)],
        args=args,
        train_dataset=grpo_dataset(examples, cfg.model.worked_example),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.model.lora) if fresh_lora else None,
    )
    trainer.remove_callback(PrinterCallback)  # our log lines report progress, not printed dicts
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return trainer.model, trainer.state.global_step
