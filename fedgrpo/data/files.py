"""Each party's own data files: an organisation's labelled examples, the server's questions.

In a real deployment nothing is derived from a shared seed: every organisation brings one labelled
file, and the server brings its unlabelled training questions (plus, optionally, its own small
labelled auxiliary or held-out files). These are the readers and writers for those files.

Format
------
UTF-8 JSON Lines: one JSON object per line; blank lines are skipped; a UTF-8 byte-order mark is
tolerated. A file with no object at all, a line that is not a JSON object, or a field of the wrong
type is refused with an error naming ``path:line``; so is a line over 64 KiB
(:data:`~fedgrpo.data.jsonl.MAX_LINE_BYTES`). Each error's public reason (what an organisation's
client may tell the server) names the line and the kind of fault, never a value or a path.

Labelled file (an organisation's private data; the server's auxiliary or held-out set)::

    {"question": "What is 17 + 25?", "answer": "42", "domain": "sums_2digit"}

``question``
    string, required, non-blank.
``answer``
    string, required, non-blank: the reference *final* answer (e.g. ``"42"``), not a worked solution.
``domain``
    string, optional. Default: the reader's ``domain`` argument, else the file name without suffix.
``entry``
    object, optional: a reasoning-gym entry (``question``, ``answer``, ``metadata``). When
    ``metadata.source_dataset`` names a reasoning-gym task, :func:`~fedgrpo.data.score_answer` uses
    that task's exact scorer; otherwise answers are compared with math-verify / normalised text.
    Its ``answer``, when present, must equal the top-level ``answer``.
``qid``
    ignored. Question ids are always recomputed as ``make_qid(domain, question)``, so a party never
    has to trust ids written by another.

Other keys are ignored. A question repeated within a file (compared after
:func:`~fedgrpo.data.normalise_question`) keeps its first line; the reader logs a warning with the
count.

Question file (the server's unlabelled training questions)::

    {"question": "What is 17 + 25?", "domain": "sums_2digit"}

Only ``question`` (required), ``domain`` (optional, defaults as above) and ``qid`` (ignored) are
allowed. A line carrying ``answer`` or ``entry`` is refused rather than silently dropped: the
server's task file must not carry answers, and one that does was most likely pointed at a labelled
file by mistake, which a privacy-minded operator wants to hear about. Any other key is refused too,
for the same reason. Repeated questions keep their first line, with a warning.

Writers replace the destination atomically (temp file in the same folder, then ``os.replace``).
Labelled files are created readable by their owner only (mode 0o600); question files follow the
umask. Writing an empty list is refused, since the readers refuse the resulting empty file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedgrpo.data.domains import Example, Question, _rg_datasets, make_qid, normalise_question
from fedgrpo.data.jsonl import (
    fault,
    json_type,
    optional_text,
    read_jsonl_objects,
    required_text,
)
from fedgrpo.storage.atomic import write_text_atomic

__all__ = [
    "client_name",
    "read_client_data",
    "read_labelled",
    "read_questions",
    "to_question",
    "write_client_data",
    "write_labelled",
    "write_questions",
]

log = logging.getLogger(__name__)

QUESTION_FILE_KEYS = frozenset({"question", "domain", "qid"})
_ANSWER_KEYS = ("answer", "entry")


def _default_domain(path: Path, domain: str | None) -> str:
    if domain is not None:
        if not domain.strip():
            raise ValueError("domain must be non-empty when given")
        return domain
    if not path.stem.strip():
        raise fault(str(path), None, "no domain given and the file name has no stem to use as one")
    return path.stem


def _entry(row: dict[str, Any], answer: str, where: str, line: int) -> dict[str, Any]:
    """The optional reasoning-gym entry, checked so it cannot make the exact scorer fail silently.

    score_answer swallows scorer errors as 0.0 (a client must always answer), so an unknown task or
    a mismatched answer here would turn every reward into 0 without a word: refuse it at load time.
    """
    entry = row.get("entry")
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise fault(where, line, f"field 'entry' must be an object, got {json_type(entry)}")
    metadata = entry.get("metadata", {})
    if not isinstance(metadata, dict):
        raise fault(where, line, f"field 'entry.metadata' must be an object, got {json_type(metadata)}")
    source = metadata.get("source_dataset")
    if source is not None and (not isinstance(source, str) or source not in _rg_datasets()):
        kind = "field 'entry.metadata.source_dataset' is not a reasoning-gym task"
        detail = f"entry.metadata.source_dataset {source!r} is not a reasoning-gym task"
        raise fault(where, line, kind, detail + ", so the entry could not be scored")
    if "answer" in entry and str(entry["answer"]) != answer:
        kind = "field 'entry.answer' differs from field 'answer'"
        detail = f"entry.answer {str(entry['answer'])[:80]!r} differs from answer {answer[:80]!r}"
        raise fault(where, line, kind, detail)
    return entry


def _warn_duplicates(path: Path, dropped: list[int], conflicting: int) -> None:
    if dropped:
        shown = ", ".join(str(n) for n in dropped[:10]) + (", ..." if len(dropped) > 10 else "")
        extra = f"; {conflicting} of them with a different answer than the kept line" if conflicting else ""
        log.warning(
            "%s: %d repeated question(s) skipped, the first occurrence kept (lines %s)%s",
            path,
            len(dropped),
            shown,
            extra,
        )


def read_labelled(path: str | os.PathLike[str], domain: str | None = None) -> list[Example]:
    """Labelled examples from one party's own file (format in the module docstring), in file order.

    Every error is a DataFileError naming ``path:line``; qids are recomputed from the content.
    """
    path = Path(path)
    rows = read_jsonl_objects(path)
    default = _default_domain(path, domain)
    out: list[Example] = []
    first: dict[str, Example] = {}
    dropped: list[int] = []
    conflicting = 0
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        question = required_text(row, "question", where, lineno)
        answer = required_text(row, "answer", where, lineno)
        dom = optional_text(row, "domain", where, lineno) or default
        entry = _entry(row, answer, where, lineno)
        key = normalise_question(question)
        if key in first:
            dropped.append(lineno)
            conflicting += first[key].answer.strip() != answer.strip()
            continue
        ex = Example(qid=make_qid(dom, question), domain=dom, question=question, answer=answer, entry=entry)
        first[key] = ex
        out.append(ex)
    _warn_duplicates(path, dropped, conflicting)
    return out


def read_questions(path: str | os.PathLike[str], domain: str | None = None) -> list[Question]:
    """The server's unlabelled training questions, in file order (format in the module docstring).

    A line with an ``answer`` or ``entry`` (or any key but question/domain/qid) is refused: the
    server's task file must not carry answers.
    """
    path = Path(path)
    rows = read_jsonl_objects(path)
    default = _default_domain(path, domain)
    out: list[Question] = []
    seen: set[str] = set()
    dropped: list[int] = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        carried = [k for k in _ANSWER_KEYS if k in row]
        if carried:
            kind = (
                "the server's question file must not carry answers, but this line has "
                f"{', '.join(repr(k) for k in carried)} (use read_labelled for labelled files)"
            )
            raise fault(where, lineno, kind)
        unknown = sorted(set(row) - QUESTION_FILE_KEYS)
        if unknown:
            allowed = ", ".join(sorted(QUESTION_FILE_KEYS))
            kind = f"{len(unknown)} unknown field(s) in a question file; allowed: {allowed}"
            detail = f"unknown field(s) {unknown} in a question file; allowed: {allowed}"
            raise fault(where, lineno, kind, detail)
        question = required_text(row, "question", where, lineno)
        dom = optional_text(row, "domain", where, lineno) or default
        key = normalise_question(question)
        if key in seen:
            dropped.append(lineno)
            continue
        seen.add(key)
        out.append(Question(qid=make_qid(dom, question), domain=dom, question=question))
    _warn_duplicates(path, dropped, 0)
    return out


def _check_text(value: object, what: str, i: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"item {i}: {what} must be a non-empty string, got {value!r}")


def write_labelled(examples: Iterable[Example], path: str | os.PathLike[str]) -> None:
    """Write examples in the labelled format, atomically, readable by the owner only (0o600).

    Refuses what :func:`read_labelled` would refuse (empty list, blank question/answer/domain), so a
    file written here always reads back.
    """
    examples = list(examples)
    if not examples:
        raise ValueError(f"{path}: no examples to write (an empty data file would be refused on reading)")
    write_text_atomic(path, labelled_jsonl(examples), private=True)


def labelled_jsonl(examples: Iterable[Example]) -> str:
    """The labelled file's text (one JSON object a line): what a party would hand over as its data."""
    lines = []
    for i, ex in enumerate(examples):
        for what in ("question", "answer", "domain"):
            _check_text(getattr(ex, what), what, i)
        lines.append(json.dumps(dataclasses.asdict(ex), default=str) + "\n")
    return "".join(lines)


def write_questions(questions: Iterable[Question | Example], path: str | os.PathLike[str]) -> None:
    """Write questions in the question format, atomically; answers of Examples are never written."""
    questions = list(questions)
    if not questions:
        raise ValueError(f"{path}: no questions to write (an empty data file would be refused on reading)")
    lines = []
    for i, q in enumerate(questions):
        for what in ("question", "domain"):
            _check_text(getattr(q, what), what, i)
        row = {"qid": q.qid, "domain": q.domain, "question": q.question}
        lines.append(json.dumps(row) + "\n")
    write_text_atomic(path, "".join(lines))


def client_name(k: int) -> str:
    """Canonical client name: client-0, client-1, ..."""
    return f"client-{k}"


def to_question(example: Example) -> Question:
    """Strip the answer and the scoring entry: what the server is allowed to see."""
    return Question(qid=example.qid, domain=example.domain, question=example.question)


def write_client_data(examples: list[Example], path: str | os.PathLike[str]) -> None:
    """One client's private examples: the file its own SuperNode is pointed at (see write_labelled)."""
    write_labelled(examples, path)


def read_client_data(path: str | os.PathLike[str]) -> list[Example]:
    """A client's private examples, as written by write_client_data or by hand (see read_labelled)."""
    return read_labelled(path)
