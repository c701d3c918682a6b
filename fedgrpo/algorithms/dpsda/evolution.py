"""Private Evolution's server side for ``dpsda-fl``: propose samples, collect the clients' noisy votes,
keep the best-voted, vary them, T times.

RANDOM_API: the server policy, shown ``dpsda.fewshot`` of the server's own auxiliary examples of one
domain, writes a new question and its ``<answer>``. Each iteration every client returns a noisy
nearest-neighbour vote histogram over the samples (its only release, made by
:class:`~fedgrpo.algorithms.dpsda.private_evolution.VotingClient`); the server sums, thresholds and keeps the
best-voted samples, and VARIATION_API (the policy rewrites a sample) refills the population. How a
vote request reaches the clients is a :data:`VoteExchange`: in this process
(:func:`in_process_exchange`) or as Flower messages (:mod:`fedgrpo.algorithms.dpsda.flower`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgrpo.algorithms.dpsda.answers import with_answer
from fedgrpo.algorithms.dpsda.private_evolution import (
    Sample,
    VotingClient,
    decode_histogram,
    encode_request,
    kept_per_iteration,
    sample_text,
    top_voted,
)
from fedgrpo.config import FedGRPOConfig
from fedgrpo.data import Example, derive_seed
from fedgrpo.method.answers import ANSWER_RE, extract_answer
from fedgrpo.models.loading import load_policy
from fedgrpo.run.evaluate import generate_completions
from fedgrpo.selection import mean_pooled_embedder
from fedgrpo.server.stats import RoundStats

log = logging.getLogger(__name__)

EVOLUTION_FILE = "evolution.jsonl"  # per iteration: the samples, the summed noisy votes, bytes
MAX_QUESTION_CHARS = 1000

# A vote request's bytes -> per client asked, its reply's bytes or why it gave none.
VoteExchange = Callable[[bytes], dict[str, bytes | BaseException]]


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
        kept = top_voted(answered_first(histogram, population), p.threshold, keep)
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


def answered_first(histogram: np.ndarray, population: list[Sample]) -> np.ndarray:
    """The votes PE ranks by, with a sample that has no answer put last (at -inf): it is no training
    target (with ``dpsda.answers: solved``, one whose question states no arithmetic expression).
    Post-processing of the released votes, so it costs no privacy."""
    return np.where([bool(s.answer) for s in population], histogram, -np.inf)


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


SYSTEM = "You write practice questions with their answers."  # PE's own meta-prompt: no solving instruction
PREFILL = "Question:"  # the reply starts as a sample does, so the model writes a question, then its answer
_LABEL_RE = re.compile(r"^\s*(?:question|q)\s*[:.]\s*", re.IGNORECASE)
_NEXT_RE = re.compile(r"\n\s*question\s*:", re.IGNORECASE)
_ANSWER_LABEL_RE = re.compile(r"(?:^|\n)\s*(?:answer|a)\s*[:.]\s*", re.IGNORECASE)
_SHORT_ANSWER_RE = re.compile(r"^\s*([+-]?\d+(?:[.,/]\d+)?|yes|no)\b", re.IGNORECASE)
MAX_ANSWER_CHARS = 40


def chat(prompt: str) -> list[dict[str, str]]:
    """The messages of a proposal or rewrite: PE's own, not the task prompt that asks to solve."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


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
    """A generated sample, read tolerantly: the first question written, then its answer from the
    ``<answer>`` tag, else from an ``Answer:`` line, else a number (or yes/no) right after the
    question mark; ``""`` when none is found (such a sample is voted on, never trained on).

    A small model's output may follow no format; its text is kept as the question (the votes judge it).
    """
    text = _NEXT_RE.split(_LABEL_RE.sub("", text.strip(), count=1), maxsplit=1)[0]  # the first sample
    tagged = extract_answer(text)
    head = ANSWER_RE.split(text, maxsplit=1)[0] if ANSWER_RE.search(text) else text
    question, *labelled = _ANSWER_LABEL_RE.split(head, maxsplit=1)
    answer = tagged or _short_answer(labelled[0].strip().split("\n")[0] if labelled else "")
    if not answer and "?" in question:
        asked, _, rest = question.partition("?")
        found = _SHORT_ANSWER_RE.match(rest)
        if found:
            question, answer = asked + "?", found.group(1)
    question = question.strip() or text.strip() or "?"
    return Sample(question[:MAX_QUESTION_CHARS], (answer or "").strip(), domain)


def _short_answer(line: str) -> str:
    """An ``Answer:`` line's answer: the line itself, without a closing full stop, if short."""
    line = line.strip().removesuffix(".").strip()
    return line if 0 < len(line) <= MAX_ANSWER_CHARS else ""


def _generate(cfg: FedGRPOConfig, policy: Any, tokenizer: Any, prompts: list[str], desc: str) -> list[str]:
    p = cfg.dpsda
    texts = generate_completions(
        policy,
        tokenizer,
        prompts,
        p.max_new_tokens,
        cfg.eval.batch_size,
        desc=desc,
        temperature=p.temperature,
        share_prompts=cfg.run.share_prompts,
        messages=chat,
        prefill=PREFILL,
    )
    return [PREFILL + t for t in texts]


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
    source = cfg.dpsda.answers
    return [with_answer(parse_sample(text, d), source) for text, d in zip(texts, chosen, strict=True)]


def vary(cfg: FedGRPOConfig, policy: Any, tokenizer: Any, survivors: list[Sample]) -> list[Sample]:
    """VARIATION_API: ``dpsda.variations`` rewrites of every surviving sample."""
    parents = [s for s in survivors for _ in range(cfg.dpsda.variations)]
    texts = _generate(cfg, policy, tokenizer, [variation_prompt(s) for s in parents], "PE variations")
    source = cfg.dpsda.answers
    return [with_answer(parse_sample(t, s.domain), source) for t, s in zip(texts, parents, strict=True)]
