"""Each party's own data files: readers, writers, and every malformed case naming path:line (offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import logging  # noqa: E402
import stat  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fedgrpo.data import (  # noqa: E402
    DataFileError,
    Example,
    Question,
    generate,
    make_qid,
    read_client_data,
    read_labelled,
    read_questions,
    score_answer,
    write_client_data,
    write_labelled,
    write_questions,
)


def _ex(question: str, answer: str, domain: str = "arith") -> Example:
    return Example(make_qid(domain, question), domain, question, answer)


HAND_MADE = [
    _ex("What is 17 + 25?", "42"),
    _ex("Café: how many letters in 'crème brûlée'?", "11", domain="letters"),
    _ex('Line\u2028separator and "quotes" and a\ttab: 2 + 2?', "4"),
    _ex("Is this ✓ right?", "Yes", domain="logic"),
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _row(**fields: object) -> str:
    return json.dumps(fields)


GOOD = _row(question="What is 1 + 1?", answer="2")


# ---------------------------------------------------------------------------------------------
# round trips


def test_labelled_round_trip_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "org" / "org-a.jsonl"
    write_labelled(HAND_MADE, path)
    assert read_labelled(path) == HAND_MADE
    assert _mode(path) == 0o600
    # Overwriting an existing world-readable file leaves a private one and no temp file behind.
    path.chmod(0o644)
    write_labelled(HAND_MADE[:2], path)
    assert _mode(path) == 0o600
    assert read_labelled(path) == HAND_MADE[:2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["org-a.jsonl"]


def test_write_client_data_keeps_its_format_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "client-0.jsonl"
    write_client_data(HAND_MADE, path)
    assert _mode(path) == 0o600
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [set(r) for r in rows] == [{"qid", "domain", "question", "answer", "entry"}] * len(HAND_MADE)
    assert read_client_data(path) == HAND_MADE == read_labelled(path)


def test_questions_round_trip_never_writes_answers(tmp_path: Path) -> None:
    path = tmp_path / "server" / "questions.jsonl"
    questions = [Question(e.qid, e.domain, e.question) for e in HAND_MADE]
    write_questions(questions, path)
    assert read_questions(path) == questions
    write_questions(HAND_MADE, path)  # Examples are accepted; only their question side is written
    assert read_questions(path) == questions
    text = path.read_text(encoding="utf-8")
    assert '"answer"' not in text and '"entry"' not in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["questions.jsonl"]


def test_domain_defaults_to_argument_then_file_stem(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "sums.jsonl", GOOD, _row(question="3 + 3?", answer="6", domain="other"))
    by_stem = read_labelled(path)
    assert [e.domain for e in by_stem] == ["sums", "other"]
    by_arg = read_labelled(path, domain="arith")
    assert [e.domain for e in by_arg] == ["arith", "other"]
    assert by_arg[0].qid == make_qid("arith", "What is 1 + 1?")
    qpath = _write_lines(tmp_path / "qs.jsonl", _row(question="1 + 1?"), _row(question="2 + 2?", domain="x"))
    assert [q.domain for q in read_questions(qpath)] == ["qs", "x"]
    assert [q.domain for q in read_questions(qpath, domain="arith")] == ["arith", "x"]


def test_forged_qids_are_recomputed_from_content(tmp_path: Path) -> None:
    forged = "0123456789abcdef"
    path = _write_lines(tmp_path / "d.jsonl", _row(qid=forged, question="What is 1 + 1?", answer="2"))
    (ex,) = read_labelled(path)
    assert ex.qid == make_qid("d", "What is 1 + 1?") != forged
    qpath = _write_lines(tmp_path / "q.jsonl", _row(qid=forged, question="What is 1 + 1?", domain="d"))
    (q,) = read_questions(qpath)
    assert q.qid == ex.qid


@pytest.mark.parametrize(
    "name", ["sums_2digit", "products", "letter_counting", "syllogism", "number_sorting"]
)
def test_reasoning_gym_entries_survive_and_score_exactly(tmp_path: Path, name: str) -> None:
    examples = generate(name, 15, seed=3)
    path = tmp_path / f"{name}.jsonl"
    write_labelled(examples, path)
    back = read_labelled(path)
    assert back == examples
    for original, ex in zip(examples, back, strict=True):
        assert ex.entry == json.loads(json.dumps(original.entry, default=str))
        assert ex.entry["metadata"]["source_dataset"] == original.entry["metadata"]["source_dataset"]
        assert score_answer(ex, ex.answer) == 1.0
        for wrong in (f"{ex.answer} or maybe {ex.answer}1", "definitely not 98765", "", "  "):
            assert score_answer(ex, wrong) == score_answer(original, wrong) == 0.0


def test_duplicate_questions_keep_the_first_and_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_lines(
        tmp_path / "d.jsonl",
        GOOD,
        _row(question="what is 1 +   1?", answer="2"),
        _row(question="3 + 3?", answer="6"),
        _row(question="WHAT IS 1 + 1?", answer="3"),
    )
    with caplog.at_level(logging.WARNING, logger="fedgrpo.data.files"):
        examples = read_labelled(path)
    assert [(e.question, e.answer) for e in examples] == [("What is 1 + 1?", "2"), ("3 + 3?", "6")]
    (record,) = [r for r in caplog.records if r.name == "fedgrpo.data.files"]
    assert str(path) in record.getMessage() and "2 repeated question(s)" in record.getMessage()
    assert "lines 2, 4" in record.getMessage() and "1 of them with a different answer" in record.getMessage()

    caplog.clear()
    qpath = _write_lines(tmp_path / "q.jsonl", _row(question="A?"), _row(question=" a? "))
    with caplog.at_level(logging.WARNING, logger="fedgrpo.data.files"):
        assert [q.question for q in read_questions(qpath)] == ["A?"]
    assert "1 repeated question(s)" in caplog.text


# ---------------------------------------------------------------------------------------------
# malformed files: every error names path:line


LABELLED_BAD = {
    "array": ("[1, 2, 3]", "expected a JSON object per line, got array"),
    "null": ("null", "expected a JSON object per line, got null"),
    "string": ('"x"', "expected a JSON object per line, got string"),
    "number": ("3.5", "expected a JSON object per line, got number"),
    "invalid_json": ('{"question": "q", "answer": }', "not valid JSON"),
    "missing_question": (_row(answer="2"), "missing required field 'question'"),
    "missing_answer": (_row(question="q"), "missing required field 'answer'"),
    "empty_answer": (_row(question="q", answer=""), "field 'answer' is empty"),
    "blank_answer": (_row(question="q", answer=" \n\t"), "field 'answer' is empty"),
    "blank_question": (_row(question="  ", answer="1"), "field 'question' is empty"),
    "numeric_answer": (_row(question="q", answer=42), "'answer' must be a string, got number"),
    "null_question": (_row(question=None, answer="1"), "'question' must be a string, got null"),
    "list_question": (_row(question=["q"], answer="1"), "'question' must be a string, got array"),
    "numeric_domain": (_row(question="q", answer="1", domain=3), "'domain' must be a string, got number"),
    "empty_domain": (_row(question="q", answer="1", domain=""), "field 'domain' is empty"),
    "entry_not_object": (_row(question="q", answer="1", entry="x"), "'entry' must be an object, got string"),
    "metadata_not_object": (
        _row(question="q", answer="1", entry={"metadata": []}),
        "'entry.metadata' must be an object, got array",
    ),
    "unknown_task": (
        _row(question="q", answer="1", entry={"metadata": {"source_dataset": "no_such_task"}}),
        "'no_such_task' is not a reasoning-gym task",
    ),
    "entry_answer_differs": (
        _row(question="q", answer="1", entry={"answer": "2", "metadata": {"source_dataset": "chain_sum"}}),
        "entry.answer '2' differs from answer '1'",
    ),
}


@pytest.mark.parametrize("case", sorted(LABELLED_BAD))
def test_malformed_labelled_line_names_path_and_line(tmp_path: Path, case: str) -> None:
    line, message = LABELLED_BAD[case]
    path = _write_lines(tmp_path / "org.jsonl", GOOD, "", line)  # the bad line is line 3
    with pytest.raises(DataFileError, match=message) as err:
        read_labelled(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert isinstance(err.value, ValueError)
    # what may leave the organisation: the line and the kind of fault, no value, no path
    assert err.value.public.startswith("data file line 3: ") and str(tmp_path) not in err.value.public
    assert "'2'" not in err.value.public and "no_such_task" not in err.value.public


@pytest.mark.parametrize("reader", [read_labelled, read_questions])
def test_a_line_over_the_size_limit_is_refused_before_parsing(tmp_path: Path, reader) -> None:
    from fedgrpo.data.jsonl import MAX_LINE_BYTES

    path = tmp_path / "big.jsonl"
    answer = {} if reader is read_questions else {"answer": "2"}
    fits = _row(question="q" * (MAX_LINE_BYTES - 40) + "?", **answer)
    assert len(fits) <= MAX_LINE_BYTES
    huge = "{" + "x" * 5_000_000  # 5 MB, and not even JSON: refused by its size, before parsing
    _write_lines(path, fits, huge)
    with pytest.raises(DataFileError, match=f"line longer than the limit of {MAX_LINE_BYTES} bytes") as err:
        reader(path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert err.value.public == f"data file line 2: line longer than the limit of {MAX_LINE_BYTES} bytes"
    _write_lines(path, fits)
    assert len(reader(path)) == 1  # a line just under the limit is read


QUESTIONS_BAD = {
    "array": ("[1]", "expected a JSON object per line, got array"),
    "null": ("null", "expected a JSON object per line, got null"),
    "missing_question": (_row(domain="d"), "missing required field 'question'"),
    "blank_question": (_row(question=" "), "field 'question' is empty"),
    "numeric_question": (_row(question=1), "'question' must be a string, got number"),
    "numeric_domain": (_row(question="q", domain=1), "'domain' must be a string, got number"),
    "answer": (_row(question="q", answer="2"), "must not carry answers, but this line has 'answer'"),
    "empty_answer": (_row(question="q", answer=""), "must not carry answers"),
    "entry": (_row(question="q", entry={}), "must not carry answers, but this line has 'entry'"),
    "unknown_key": (_row(question="q", solution="2"), r"unknown field\(s\) \['solution'\]"),
}


@pytest.mark.parametrize("case", sorted(QUESTIONS_BAD))
def test_malformed_question_line_names_path_and_line(tmp_path: Path, case: str) -> None:
    line, message = QUESTIONS_BAD[case]
    path = _write_lines(tmp_path / "questions.jsonl", _row(question="ok?"), line)
    with pytest.raises(DataFileError, match=message) as err:
        read_questions(path)
    assert str(err.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("reader", [read_labelled, read_questions])
def test_bad_utf8_names_path_and_line(tmp_path: Path, reader) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"question": "a?", "answer": "1"}\n\n{"question": "caf\xe9?", "answer": "1"}\n')
    with pytest.raises(DataFileError, match=r"not UTF-8 text \(byte 0xe9") as err:
        reader(path)
    assert str(err.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize("reader", [read_labelled, read_questions])
@pytest.mark.parametrize(
    ("case", "message"),
    [("missing", "file not found"), ("directory", "is a directory"), ("empty", "empty data file")],
)
def test_unusable_file_names_the_path(tmp_path: Path, reader, case: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataFileError, match=message) as err:
        reader(path)
    assert str(err.value).startswith(f"{path}: ")


def test_writers_refuse_what_readers_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="no examples"):
        write_labelled([], path)
    with pytest.raises(ValueError, match="no questions"):
        write_questions([], path)
    with pytest.raises(ValueError, match="item 1: answer must be a non-empty string"):
        write_labelled([HAND_MADE[0], _ex("q?", " ")], path)
    with pytest.raises(ValueError, match="item 0: question must be a non-empty string"):
        write_questions([Question("x", "d", "")], path)
    assert not path.exists() and list(tmp_path.iterdir()) == []
