"""Generating a domain's labelled examples: reasoning-gym streams, GSM8K-style JSONL, Hugging Face datasets.

Deterministic in (domain, n, seed) and prefix-stable, so a split can ask for more when cross-domain
deduplication removes some.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.data.domains import (
    DomainSpec,
    Example,
    NotEnoughExamplesError,
    derive_seed,
    make_qid,
    resolve_domain,
)
from fedgrpo.data.jsonl import DataFileError, read_jsonl_objects, required_text

__all__ = ["generate", "parse_gsm8k_answer"]

# reasoning-gym datasets derive item idx from Random(seed + idx); chunks of this size are generated
# under independent hashed seeds, so the stream is infinite, prefix-stable and never overlaps itself.
_RG_CHUNK = 500
# Give up on a task once this many draws in a row produced only already-seen questions.
_RG_MAX_CONSECUTIVE_DUPLICATES = 3000


def _rg_stream(spec: DomainSpec, task: str, seed: int) -> Iterator[dict[str, Any]]:
    """Endless deterministic stream of reasoning-gym entries for one task."""
    import reasoning_gym

    kwargs = spec.task_config.get(task, {})
    chunk = 0
    while True:
        ds = reasoning_gym.create_dataset(
            task, size=_RG_CHUNK, seed=derive_seed("rg", spec.name, task, seed, chunk), **kwargs
        )
        for idx in range(_RG_CHUNK):
            yield ds[idx]
        chunk += 1


def _generate_rg(spec: DomainSpec, n: int, seed: int) -> list[Example]:
    """Round-robin over the tasks, skipping repeats; a task that only repeats is retired."""
    streams = {t: _rg_stream(spec, t, seed) for t in spec.tasks}
    dup_run = dict.fromkeys(spec.tasks, 0)
    active = list(spec.tasks)
    seen: set[str] = set()
    out: list[Example] = []
    while len(out) < n:
        if not active:
            raise NotEnoughExamplesError(
                f"domain {spec.name!r}: only {len(out)} distinct questions could be generated, "
                f"{n} requested (the task configs allow too few distinct questions)"
            )
        for task in list(active):
            if len(out) >= n:
                break
            entry = next(streams[task])
            question, answer = str(entry["question"]), str(entry["answer"])
            qid = make_qid(spec.name, question)
            if qid in seen:
                dup_run[task] += 1
                if dup_run[task] >= _RG_MAX_CONSECUTIVE_DUPLICATES:
                    active.remove(task)
                continue
            dup_run[task] = 0
            seen.add(qid)
            entry = {"question": question, "answer": answer, "metadata": dict(entry.get("metadata", {}))}
            entry["metadata"].setdefault("source_dataset", task)
            out.append(Example(qid=qid, domain=spec.name, question=question, answer=answer, entry=entry))
    return out


def parse_gsm8k_answer(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after '####', commas stripped.

    An empty final answer is refused: it would become an empty gold answer, and an empty prediction
    would then look correct.
    """
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '#### N' final line: {answer[-80:]!r}")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise ValueError(f"GSM8K answer has nothing after '####': {answer[-80:]!r}")
    return final


def _read_gsm8k_jsonl(spec: DomainSpec) -> list[tuple[str, str]]:
    """(question, final answer) per line; every problem is a DataFileError naming path:line."""
    path = Path(spec.path or "")
    try:
        objects = read_jsonl_objects(path)
    except DataFileError as exc:
        raise DataFileError(f"domain {spec.name!r}: {exc}", exc.public) from None
    rows: list[tuple[str, str]] = []
    for lineno, obj in objects:
        where = f"domain {spec.name!r}: {path}:{lineno}"
        question = required_text(obj, "question", where)
        solution = required_text(obj, "answer", where)
        try:
            rows.append((question, parse_gsm8k_answer(solution)))
        except ValueError as exc:
            raise DataFileError(f"{where}: {exc}") from None
    return rows


def _read_hf(spec: DomainSpec) -> list[tuple[str, str]]:
    """Rows from datasets.load_dataset; answers with a GSM8K '#### N' tail are reduced to N."""
    import datasets

    try:
        ds = datasets.load_dataset(spec.hf_name, spec.hf_config, split=spec.split, data_files=spec.data_files)
    except Exception as exc:  # offline hub errors come in many types; name the dataset either way
        raise RuntimeError(
            f"domain {spec.name!r}: could not load HF dataset {spec.hf_name!r} "
            f"(config={spec.hf_config!r}, split={spec.split!r}): {type(exc).__name__}: {exc}. "
            "If offline, use a local file via hf_name='json' + data_files, or source 'gsm8k_jsonl'."
        ) from exc
    for fld in (spec.question_field, spec.answer_field):
        if fld not in ds.column_names:
            raise ValueError(
                f"domain {spec.name!r}: HF dataset {spec.hf_name!r} has no column {fld!r}; "
                f"columns: {ds.column_names}"
            )
    rows = []
    for i, (q, a) in enumerate(zip(ds[spec.question_field], ds[spec.answer_field], strict=True)):
        where = f"domain {spec.name!r}: HF dataset {spec.hf_name!r} (split {spec.split!r}) row {i}"
        if q is None or not str(q).strip():
            raise DataFileError(f"{where}: empty question in column {spec.question_field!r}")
        if a is None or not str(a).strip():
            raise DataFileError(f"{where}: empty answer in column {spec.answer_field!r}")
        a = str(a)
        try:
            rows.append((str(q), parse_gsm8k_answer(a) if "####" in a else a.strip()))
        except ValueError as exc:
            raise DataFileError(f"{where}: {exc}") from None
    return rows


def _sample_rows(spec: DomainSpec, rows: list[tuple[str, str]], n: int, seed: int) -> list[Example]:
    """Dedupe by qid (first occurrence wins), shuffle with the seed, take the first n."""
    unique: dict[str, Example] = {}
    for q, a in rows:
        qid = make_qid(spec.name, q)
        unique.setdefault(qid, Example(qid=qid, domain=spec.name, question=q, answer=a, entry={}))
    examples = list(unique.values())
    if len(examples) < n:
        raise NotEnoughExamplesError(
            f"domain {spec.name!r}: {n} examples requested but only {len(examples)} distinct ones available"
        )
    order = np.random.default_rng(derive_seed("rows", spec.name, seed)).permutation(len(examples))
    return [examples[i] for i in order[:n]]


def generate(spec: DomainSpec | str, n: int, seed: int) -> list[Example]:
    """n distinct examples of a domain, deterministic in (spec, n, seed).

    Prefix-stable: generate(spec, m, seed) is a prefix of generate(spec, n, seed) for m <= n, so
    callers can ask for more when cross-pool deduplication removes some.
    """
    spec = resolve_domain(spec)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    if spec.source == "reasoning_gym":
        return _generate_rg(spec, n, seed)
    rows = _read_gsm8k_jsonl(spec) if spec.source == "gsm8k_jsonl" else _read_hf(spec)
    return _sample_rows(spec, rows, n, seed)
