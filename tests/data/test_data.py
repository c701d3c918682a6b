"""Real-behaviour tests for domains, exact scoring and the federated split (no mocks, offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
from collections import Counter  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fedgrpo.data import (  # noqa: E402
    BUILTIN_DOMAINS,
    DataFileError,
    DomainSpec,
    Example,
    NotEnoughExamplesError,
    Question,
    generate,
    majority_answer_rate,
    normalise_question,
    parse_gsm8k_answer,
    read_client_data,
    resolve_domain,
    score_answer,
)
from fedgrpo.simulation.partition import build_split  # noqa: E402

REQUIRED = {
    "sums_1digit",
    "sums_2digit",
    "products",
    "syllogism",
    "gsm_symbolic",
    "letter_counting",
    "number_sorting",
    "leg_counting",
    "family_relationships",
}
SMALL_DOMAINS = ["sums_2digit", "syllogism", "letter_counting", "family_relationships"]


def test_builtin_registry_covers_required_domains() -> None:
    assert set(BUILTIN_DOMAINS) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_builtin_domain_generates_deterministically_and_scores_exactly(name: str) -> None:
    a = generate(name, 30, seed=1)
    b = generate(name, 30, seed=1)
    c = generate(name, 30, seed=2)
    assert [e.qid for e in a] == [e.qid for e in b]
    assert [e.qid for e in a] != [e.qid for e in c]
    assert len({e.qid for e in a}) == 30
    assert len({normalise_question(e.question) for e in a}) == 30
    assert generate(name, 10, seed=1) == a[:10]  # prefix-stable
    for ex in a:
        assert ex.domain == name
        assert score_answer(ex, ex.answer) == 1.0
        assert score_answer(ex, None) == 0.0
        assert score_answer(ex, "definitely not the answer 98765") == 0.0
        assert score_answer(ex, "\x00{{]]garbage") == 0.0


def test_partial_credit_counts_as_wrong() -> None:
    # chain_sum gives partial credit when the answer is a substring of the prediction.
    ex = generate("sums_2digit", 1, seed=0)[0]
    assert score_answer(ex, f"{ex.answer} or maybe {ex.answer}1") == 0.0


def test_small_task_space_is_refused_with_count() -> None:
    with pytest.raises(ValueError, match=r"only 200 distinct"):
        generate("sums_1digit", 201, seed=0)


def test_majority_answer_rate() -> None:
    exs = [
        Example(qid=str(i), domain="d", question=f"q{i}", answer=a)
        for i, a in enumerate(["Yes", "yes", "No"])
    ]
    assert majority_answer_rate(exs) == pytest.approx(2 / 3)
    assert majority_answer_rate([]) == 0.0
    assert 0.5 < majority_answer_rate(generate("syllogism", 100, seed=0)) < 0.95


def test_unknown_domain_lists_allowed() -> None:
    with pytest.raises(ValueError, match="unknown domain 'nope'") as err:
        resolve_domain("nope")
    assert "sums_1digit" in str(err.value) and "family_relationships" in str(err.value)


def test_unknown_reasoning_gym_task_and_param() -> None:
    with pytest.raises(ValueError, match="unknown reasoning-gym task") as err:
        DomainSpec(name="x", source="reasoning_gym", tasks=["not_a_task"])
    assert "chain_sum" in str(err.value)
    with pytest.raises(ValueError, match="no parameter"):
        DomainSpec(
            name="x", source="reasoning_gym", tasks=["chain_sum"], task_config={"chain_sum": {"bad": 1}}
        )
    with pytest.raises(ValueError):
        DomainSpec(name="x", source="reasoning_gym", tasks=["chain_sum"], unexpected=1)


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _gsm_rows(n: int) -> list[dict[str, str]]:
    rows = [
        {
            "question": f"Sam has {i} apples and buys 1,000 more. How many?",
            "answer": f"{i} + 1000\n#### {i + 1000:,}",
        }
        for i in range(n)
    ]
    return rows


def test_gsm8k_jsonl_loading(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    rows = _gsm_rows(20) + [{"question": "Big?", "answer": "lots\n#### 1,234"}]
    _write_jsonl(path, rows)
    spec = DomainSpec(name="gsm_local", source="gsm8k_jsonl", path=str(path))
    exs = generate(spec, 21, seed=0)
    by_q = {e.question: e for e in exs}
    assert by_q["Big?"].answer == "1234"
    assert by_q["Sam has 3 apples and buys 1,000 more. How many?"].answer == "1003"
    assert [e.qid for e in generate(spec, 10, seed=5)] == [e.qid for e in generate(spec, 10, seed=5)]
    assert [e.qid for e in generate(spec, 10, seed=5)] != [e.qid for e in generate(spec, 10, seed=6)]
    ex = by_q["Big?"]
    assert ex.entry == {}
    assert score_answer(ex, "1234") == 1.0
    assert score_answer(ex, "1,234") == 1.0
    assert score_answer(ex, "1235") == 0.0
    assert score_answer(ex, None) == 0.0
    assert score_answer(ex, "\\frac{{{") == 0.0
    with pytest.raises(ValueError, match="only 21 distinct"):
        generate(spec, 22, seed=0)


def test_hf_json_local_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    _write_jsonl(path, [{"q": f"What is {i} + {i}?", "a": str(2 * i)} for i in range(12)])
    spec = DomainSpec(
        name="local_hf",
        source="hf",
        hf_name="json",
        data_files=str(path),
        question_field="q",
        answer_field="a",
    )
    exs = generate(spec, 12, seed=0)
    assert {e.answer for e in exs} == {str(2 * i) for i in range(12)}
    assert all(score_answer(e, e.answer) == 1.0 for e in exs)


def test_hf_offline_error_names_dataset() -> None:
    spec = DomainSpec(name="remote", source="hf", hf_name="fedgrpo-test/does-not-exist")
    with pytest.raises(RuntimeError, match="fedgrpo-test/does-not-exist"):
        generate(spec, 5, seed=0)


def _split(
    partition: str = "iid", alpha: float = 1.0, seed: int = 0, num_clients: int = 4, ground_truth: bool = True
):
    return build_split(
        SMALL_DOMAINS,
        num_clients=num_clients,
        examples_per_client=40,
        num_train_questions=60,
        num_auxiliary=20,
        heldout_per_domain=15,
        partition=partition,
        alpha=alpha,
        seed=seed,
        ground_truth=ground_truth,
    )


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_no_ground_truth_questions_are_in_no_client_data(partition: str) -> None:
    held = _split(partition, alpha=0.5)
    split = _split(partition, alpha=0.5, ground_truth=False)
    assert not split.ground_truth and held.ground_truth
    texts = {
        name: {normalise_question(e.question) for e in data}
        for name, data in [*split.clients.items(), ("aux", split.auxiliary)]
        + [(f"heldout:{d}", v) for d, v in split.heldout.items()]
    }
    train = [normalise_question(q.question) for q in split.train_questions]
    assert len(set(train)) == 60
    for name, seen in texts.items():
        assert not seen & set(train), name
    # Spread evenly over the domains; the labelled copies (for the run's audit only) match the questions.
    assert Counter(q.domain for q in split.train_questions) == dict.fromkeys(SMALL_DOMAINS, 15)
    assert [e.qid for e in split.train_examples] == [q.qid for q in split.train_questions]
    # Everything else is exactly the ground-truth split's: only the server's questions moved.
    assert {n: [e.qid for e in d] for n, d in split.clients.items()} == {
        n: [e.qid for e in d] for n, d in held.clients.items()
    }
    assert [e.qid for e in split.auxiliary] == [e.qid for e in held.auxiliary]
    assert split.heldout.keys() == held.heldout.keys()
    assert all([e.qid for e in split.heldout[d]] == [e.qid for e in held.heldout[d]] for d in split.heldout)


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_split_disjoint_and_consistent(partition: str) -> None:
    split = _split(partition, alpha=0.5)
    assert list(split.clients) == [f"client-{k}" for k in range(4)]
    assert all(split.clients.values())
    sets = {f"client:{n}": data for n, data in split.clients.items()}
    sets["aux"] = split.auxiliary
    sets.update({f"heldout:{d}": exs for d, exs in split.heldout.items()})
    for (_, a), (_, b) in combinations(sets.items(), 2):
        assert not {e.qid for e in a} & {e.qid for e in b}
        assert not {normalise_question(e.question) for e in a} & {normalise_question(e.question) for e in b}
    everything = [e for data in sets.values() for e in data]
    assert len({normalise_question(e.question) for e in everything}) == len(everything)
    assert len(split.auxiliary) == 20
    assert all(len(v) == 15 for v in split.heldout.values()) and set(split.heldout) == set(SMALL_DOMAINS)
    assert sum(len(v) for v in split.clients.values()) == 160
    for name, data in split.clients.items():
        counts = split.client_domains[name]
        assert sum(counts.values()) == len(data)
        assert all(counts[d] == sum(e.domain == d for e in data) for d in SMALL_DOMAINS)
    if partition == "iid":
        assert all(len(v) == 40 for v in split.clients.values())
        assert all(c == 10 for counts in split.client_domains.values() for c in counts.values())

    client_qids = {e.qid for data in split.clients.values() for e in data}
    assert len(split.train_questions) == 60
    assert len({q.qid for q in split.train_questions}) == 60
    for q in split.train_questions:
        assert isinstance(q, Question)
        assert q.qid in client_qids
        assert not hasattr(q, "answer") and not hasattr(q, "entry")
    assert {f.name for f in dataclasses.fields(Question)} == {"qid", "domain", "question"}


def test_split_is_seeded() -> None:
    def key(s):
        return (
            {n: [e.qid for e in d] for n, d in s.clients.items()},
            [q.qid for q in s.train_questions],
            [e.qid for e in s.auxiliary],
            {d: [e.qid for e in v] for d, v in s.heldout.items()},
        )

    assert key(_split("dirichlet", 0.3, seed=3)) == key(_split("dirichlet", 0.3, seed=3))
    assert key(_split("dirichlet", 0.3, seed=3)) != key(_split("dirichlet", 0.3, seed=4))


def _mean_max_share(split) -> float:
    shares = [max(c.values()) / sum(c.values()) for c in split.client_domains.values()]
    return float(np.mean(shares))


def test_dirichlet_skew() -> None:
    iid = np.mean([_mean_max_share(_split("iid", seed=s)) for s in range(3)])
    skewed = np.mean([_mean_max_share(_split("dirichlet", 0.1, seed=s)) for s in range(3)])
    near_iid = np.mean([_mean_max_share(_split("dirichlet", 100.0, seed=s)) for s in range(3)])
    assert iid == pytest.approx(0.25)
    assert skewed > iid + 0.3
    assert abs(near_iid - iid) < 0.1


def test_dirichlet_every_client_gets_data() -> None:
    for seed in range(5):
        split = _split("dirichlet", 0.01, seed=seed, num_clients=8)
        assert all(len(v) >= 1 for v in split.clients.values())


def test_split_validation_errors() -> None:
    with pytest.raises(ValueError, match="num_clients"):
        _split(num_clients=0)
    with pytest.raises(ValueError, match="alpha"):
        _split("dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="too small"):
        build_split(["sums_1digit"], 4, 60, 10, 10, 10, "iid", 1.0, 0)
    with pytest.raises(ValueError, match="num_train_questions"):
        build_split(["syllogism"], 2, 5, 11, 0, 0, "iid", 1.0, 0)
    with pytest.raises(ValueError, match="unknown domain"):
        build_split(["nope"], 2, 5, 5, 0, 0, "iid", 1.0, 0)


# ---------------------------------------------------------------------------------------------
# bad data files: each names the file (and line), none is disguised as "pool too small"


def _gsm_spec(path: Path) -> DomainSpec:
    return DomainSpec(name="gsm_local", source="gsm8k_jsonl", path=str(path))


def _good_line(i: int = 0) -> str:
    return json.dumps(_gsm_rows(i + 1)[i]) + "\n"


@pytest.mark.parametrize("bad", ["[1, 2, 3]", "null", '"x"', "7", "true"])
def test_jsonl_line_that_is_not_an_object_names_path_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(_good_line() + "\n" + bad + "\n", encoding="utf-8")  # blank line 2, bad line 3
    for load in (lambda: generate(_gsm_spec(path), 1, seed=0), lambda: read_client_data(path)):
        with pytest.raises(DataFileError, match="expected a JSON object") as err:
            load()
        assert f"{path}:3:" in str(err.value)


def test_invalid_json_names_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(_good_line() + '{"question": "q", \n', encoding="utf-8")
    with pytest.raises(DataFileError, match="not valid JSON") as err:
        generate(_gsm_spec(path), 1, seed=0)
    assert f"{path}:2:" in str(err.value)


@pytest.mark.parametrize("solution", ["Some work\n####", "Some work\n####   \n", "#### ,"])
def test_gsm8k_empty_final_answer_is_refused(tmp_path: Path, solution: str) -> None:
    with pytest.raises(ValueError, match="nothing after '####'"):
        parse_gsm8k_answer(solution)
    path = tmp_path / "gsm.jsonl"
    _write_jsonl(path, [*_gsm_rows(2), {"question": "Empty?", "answer": solution}])
    with pytest.raises(DataFileError, match="nothing after '####'") as err:
        generate(_gsm_spec(path), 1, seed=0)
    assert f"{path}:3:" in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answer": "#### 1"}, "missing required field 'question'"),
        ({"question": "q"}, "missing required field 'answer'"),
        ({"question": "  ", "answer": "#### 1"}, "field 'question' is empty"),
        ({"question": 5, "answer": "#### 1"}, "'question' must be a string, got number"),
        ({"question": "q", "answer": None}, "'answer' must be a string, got null"),
    ],
)
def test_gsm8k_bad_fields_name_path_and_line(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "gsm.jsonl"
    _write_jsonl(path, [*_gsm_rows(1), row])
    with pytest.raises(DataFileError, match=message) as err:
        generate(_gsm_spec(path), 1, seed=0)
    assert f"{path}:2:" in str(err.value)


def test_hf_empty_answer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    _write_jsonl(path, [{"q": "What is 1 + 1?", "a": "2"}, {"q": "What is 2 + 2?", "a": "  "}])
    spec = DomainSpec(
        name="local_hf",
        source="hf",
        hf_name="json",
        data_files=str(path),
        question_field="q",
        answer_field="a",
    )
    with pytest.raises(DataFileError, match="row 1: empty answer"):
        generate(spec, 1, seed=0)


def test_blank_prediction_never_scores() -> None:
    golds = [
        Example("a", "d", "q", ""),
        Example("b", "d", "q", "   "),
        Example("c", "d", "q", "0"),
        Example("d", "d", "q", "yes"),
        *generate("letter_counting", 3, seed=0),
        *generate("syllogism", 3, seed=0),
    ]
    for ex in golds:
        for blank in ("", " ", "\n\t "):
            assert score_answer(ex, blank) == 0.0, (ex, blank)


def test_non_utf8_file_names_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_bytes(
        (_good_line(0) + _good_line(1)).encode() + b'{"question": "caf\xe9?", "answer": "#### 1"}\n'
    )
    for load in (lambda: generate(_gsm_spec(path), 1, seed=0), lambda: read_client_data(path)):
        with pytest.raises(DataFileError, match="not UTF-8") as err:
            load()
        assert f"{path}:3:" in str(err.value)


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + "".join(_good_line(i) for i in range(3)).replace("\n", "\r\n").encode()
    )
    assert len(generate(_gsm_spec(path), 3, seed=0)) == 3


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "blank_lines"])
def test_unusable_file_names_the_path(tmp_path: Path, case: str) -> None:
    path = tmp_path / "data.jsonl"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "blank_lines":
        path.write_text("\n  \n\n", encoding="utf-8")
    message = {
        "missing": "not found",
        "directory": "is a directory",
        "empty": "empty",
        "blank_lines": "empty",
    }
    for load in (lambda: generate(_gsm_spec(path), 1, seed=0), lambda: read_client_data(path)):
        with pytest.raises(DataFileError, match=message[case]) as err:
            load()
        assert str(path) in str(err.value)


def test_bad_file_is_not_reported_as_a_small_pool(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(_good_line() + "null\n", encoding="utf-8")
    with pytest.raises(DataFileError) as err:
        build_split([_gsm_spec(path)], 1, 1, 1, 0, 0)
    assert f"{path}:2:" in str(err.value)
    assert "too small" not in str(err.value) and "distinct" not in str(err.value)
    assert not isinstance(err.value, NotEnoughExamplesError)


def test_genuine_shortage_is_reported_as_a_small_pool(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    _write_jsonl(path, _gsm_rows(3))
    with pytest.raises(NotEnoughExamplesError, match="only 3 distinct"):
        generate(_gsm_spec(path), 4, seed=0)
    with pytest.raises(NotEnoughExamplesError, match=r"too small: need 4 distinct.*only 3 distinct"):
        build_split([_gsm_spec(path)], 1, 1, 1, 0, 3)
    with pytest.raises(NotEnoughExamplesError, match="too small"):
        build_split(["sums_1digit"], 4, 60, 10, 10, 10, "iid", 1.0, 0)
