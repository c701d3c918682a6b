"""Named task domains: how to generate labelled examples and how to score an answer exactly.

Clients hold `Example`s (question + reference answer); the server only ever sees `Question`s.
Every example gets a stable `qid` derived from its domain and normalised question text, so that
sets built from different pools can be checked for overlap and clients can look questions up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from fedgrpo.data.jsonl import DataFileError, read_jsonl_objects, required_text

__all__ = [
    "BUILTIN_DOMAINS",
    "DataFileError",
    "DomainSpec",
    "Example",
    "NotEnoughExamplesError",
    "Question",
    "derive_seed",
    "generate",
    "majority_answer_rate",
    "make_qid",
    "normalise_answer",
    "normalise_question",
    "parse_gsm8k_answer",
    "resolve_domain",
    "score_answer",
]

_WS_RE = re.compile(r"\s+")
# reasoning-gym datasets derive item idx from Random(seed + idx); chunks of this size are generated
# under independent hashed seeds, so the stream is infinite, prefix-stable and never overlaps itself.
_RG_CHUNK = 500
# Give up on a task once this many draws in a row produced only already-seen questions.
_RG_MAX_CONSECUTIVE_DUPLICATES = 3000


class NotEnoughExamplesError(ValueError):
    """A domain cannot supply the number of distinct examples asked for.

    The only error that split building reports as "pool too small": bad files and bad specs raise
    their own errors and must not be disguised as a size problem.
    """


def normalise_question(text: str) -> str:
    """Lowercase, collapse whitespace, strip: the key clients use to look up a question."""
    return _WS_RE.sub(" ", text).strip().lower()


def normalise_answer(text: str) -> str:
    """Same normalisation for answers; used for string-equality fallbacks and majority rates."""
    return normalise_question(text)


def make_qid(domain: str, question: str) -> str:
    """Short sha1 over the domain and normalised question, stable across runs and machines."""
    key = f"{domain}\x00{normalise_question(question)}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def derive_seed(*parts: object) -> int:
    """A 40-bit seed hashed from parts, so derived seeds never sit next to each other."""
    key = "\x00".join(str(p) for p in parts)
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:10], 16)


@dataclass(frozen=True)
class Example:
    """A labelled example; lives on clients (and in the server's tiny auxiliary set)."""

    qid: str
    domain: str
    question: str
    answer: str
    # The original reasoning-gym entry (question/answer/metadata), {} for other sources; only the
    # scorer reads it. Excluded from hashing/equality because dicts are unhashable.
    entry: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Question:
    """What the server may see: no answer, no entry.

    `domain` is carried only for metrics and evaluation breakdowns; training code must not use it
    to route questions (expert selection has to work from the question text alone).
    """

    qid: str
    domain: str
    question: str


def _rg_datasets() -> dict[str, Any]:
    from reasoning_gym.factory import DATASETS

    return DATASETS


class DomainSpec(BaseModel):
    """A named domain and where its examples come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: Literal["reasoning_gym", "gsm8k_jsonl", "hf"]
    # reasoning_gym
    tasks: list[str] = []
    task_config: dict[str, dict[str, Any]] = {}
    # gsm8k_jsonl
    path: str | None = None
    # hf (hf_name="json"/"parquet"/"csv" with data_files loads local files, offline)
    hf_name: str | None = None
    hf_config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = "train"
    question_field: str = "question"
    answer_field: str = "answer"

    @model_validator(mode="after")
    def _check_source_fields(self) -> DomainSpec:
        if not self.name:
            raise ValueError("domain name must be non-empty")
        if self.source == "reasoning_gym":
            self._check_rg_tasks()
        elif self.source == "gsm8k_jsonl":
            if not self.path:
                raise ValueError(f"domain {self.name!r}: source 'gsm8k_jsonl' needs 'path'")
        elif self.source == "hf" and not self.hf_name:
            raise ValueError(f"domain {self.name!r}: source 'hf' needs 'hf_name'")
        if self.source != "reasoning_gym" and (self.tasks or self.task_config):
            raise ValueError(f"domain {self.name!r}: 'tasks'/'task_config' only apply to reasoning_gym")
        return self

    def _check_rg_tasks(self) -> None:
        registry = _rg_datasets()
        if not self.tasks:
            raise ValueError(f"domain {self.name!r}: source 'reasoning_gym' needs at least one task")
        unknown = [t for t in self.tasks if t not in registry]
        if unknown:
            raise ValueError(
                f"domain {self.name!r}: unknown reasoning-gym task(s) {unknown}; "
                f"allowed: {', '.join(sorted(registry))}"
            )
        extra = sorted(set(self.task_config) - set(self.tasks))
        if extra:
            raise ValueError(f"domain {self.name!r}: task_config for tasks not listed in tasks: {extra}")
        for task, kwargs in self.task_config.items():
            _, config_cls = registry[task]
            allowed = {f.name for f in dataclasses.fields(config_cls)} - {"seed", "size"}
            bad = sorted(set(kwargs) - allowed)
            if bad:
                raise ValueError(
                    f"domain {self.name!r}: task {task!r} has no parameter(s) {bad}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )


def _rg(name: str, tasks: dict[str, dict[str, Any]]) -> DomainSpec:
    return DomainSpec(name=name, source="reasoning_gym", tasks=list(tasks), task_config=tasks)


BUILTIN_DOMAINS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in [
        # 1-digit a +/- b: only 200 distinct questions exist; pools larger than that are refused.
        _rg("sums_1digit", {"chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}),
        _rg("sums_2digit", {"chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}}),
        _rg("products", {"products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}),
        _rg("syllogism", {"syllogism": {}}),
        _rg("gsm_symbolic", {"gsm_symbolic": {}}),
        _rg("letter_counting", {"letter_counting": {"min_words": 5, "max_words": 10}}),
        _rg(
            "number_sorting",
            {"number_sorting": {"min_numbers": 3, "max_numbers": 5, "min_decimals": 0, "max_decimals": 0}},
        ),
        _rg(
            "leg_counting",
            {"leg_counting": {"min_animals": 2, "max_animals": 4, "min_instances": 1, "max_instances": 5}},
        ),
        _rg("family_relationships", {"family_relationships": {}}),
    ]
}


def resolve_domain(name_or_spec: str | DomainSpec) -> DomainSpec:
    """A builtin domain by name, or the spec itself; unknown names list the allowed ones."""
    if isinstance(name_or_spec, DomainSpec):
        return name_or_spec
    try:
        return BUILTIN_DOMAINS[name_or_spec]
    except KeyError:
        raise ValueError(
            f"unknown domain {name_or_spec!r}; allowed: {', '.join(sorted(BUILTIN_DOMAINS))}"
        ) from None


# ---------------------------------------------------------------------------------------------
# generation


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
        raise DataFileError(f"domain {spec.name!r}: {exc}") from None
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


# ---------------------------------------------------------------------------------------------
# scoring


def _rg_score(entry: dict[str, Any], predicted: str) -> float:
    import reasoning_gym

    source = entry.get("metadata", {}).get("source_dataset")
    score = reasoning_gym.get_score_answer_fn(source)(predicted, entry)
    return 1.0 if score is not None and float(score) >= 1.0 else 0.0


def _math_score(gold: str, predicted: str) -> float:
    """math-verify equivalence, falling back to normalised string equality."""
    if normalise_answer(gold) == normalise_answer(predicted):
        return 1.0
    try:
        from math_verify import parse, verify

        gold_parsed = parse(gold)
        pred_parsed = parse(predicted)
        if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed):
            return 1.0
    except Exception:
        pass
    return (
        1.0
        if normalise_answer(gold).replace(",", "") == normalise_answer(predicted).replace(",", "")
        else 0.0
    )


def score_answer(example: Example, predicted: str | None) -> float:
    """Exact correctness, 1.0 or 0.0 (partial credit from reasoning-gym counts as wrong).

    Never raises: garbage predictions and scorer failures score 0.0, because a client must always
    be able to return a reward. An empty or blank prediction is always wrong, whatever the gold
    answer (an empty ``<answer></answer>`` must never earn a reward).
    """
    if predicted is None:
        return 0.0
    try:
        predicted = str(predicted)
        if not predicted.strip():
            return 0.0
        if example.entry.get("metadata", {}).get("source_dataset"):
            return _rg_score(example.entry, predicted)
        return _math_score(example.answer, predicted)
    except Exception:
        return 0.0


def majority_answer_rate(examples: list[Example]) -> float:
    """Share of the most common normalised answer: the accuracy of always guessing it."""
    if not examples:
        return 0.0
    counts = Counter(normalise_answer(e.answer) for e in examples)
    return counts.most_common(1)[0][1] / len(examples)
