"""Named task domains and exact scoring: what an example is, where a domain's examples come from, and
how an answer is judged against a reference (generation is in :mod:`fedgrpo.data.generate`).

Clients hold `Example`s (question + reference answer); the server only ever sees `Question`s.
Every example gets a stable `qid` derived from its domain and normalised question text, so that
sets built from different pools can be checked for overlap and clients can look questions up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fedgrpo.data.jsonl import DataFileError

__all__ = [
    "BUILTIN_DOMAINS",
    "DataFileError",
    "DomainSpec",
    "Example",
    "NotEnoughExamplesError",
    "Question",
    "derive_seed",
    "majority_answer_rate",
    "make_qid",
    "normalise_answer",
    "normalise_question",
    "resolve_domain",
    "score_answer",
]

_WS_RE = re.compile(r"\s+")


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

        # math-verify's timeouts use signals, which only the main thread may set: elsewhere (a Flower
        # ServerApp's thread, a bench's trainer thread) it would raise and be skipped, so run untimed
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold_parsed = parse(gold, parsing_timeout=timeout)
        pred_parsed = parse(predicted, parsing_timeout=timeout)
        if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout):
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
