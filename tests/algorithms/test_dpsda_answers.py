"""dpsda-fl's synthetic answers: the proposer's, or solved from the question (``dpsda.answers``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgrpo.algorithms.dpsda import train as dpsda
from fedgrpo.algorithms.dpsda.answers import solve_arithmetic, with_answer
from fedgrpo.algorithms.dpsda.private_evolution import Sample
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import score_answer
from fedgrpo.data.generate import generate


@pytest.mark.parametrize("domain", ["sums_1digit", "sums_2digit", "products"])
def test_every_question_of_the_arithmetic_domains_is_solved_as_its_own_scorer_wants(domain: str) -> None:
    examples = generate(domain, 200, seed=0)
    wrong = [ex.question for ex in examples if score_answer(ex, solve_arithmetic(ex.question)) != 1.0]
    assert wrong == []


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("State the final answer to the following arithmetic problem: 10 - 8 =", "2"),
        ("State the final answer to the following arithmetic problem: 3 - 40 =", "-37"),
        ("Solve the division: 36 ÷ 4. Give only your answer in parentheses.", "9"),
        ("What is 12 × 11?", "132"),
        ("What was the final answer to the following arithmetic problem: 6 x 5 =", "30"),
        ("Solve 26 * 7. Answer: x141", "182"),
        ("Solve 3 * 100 * 1, where the answer is 2500.", "300"),  # one expression; 2500 is no term
        ("Compute 2 + 3 * 4.", "14"),  # precedence as written
        ("48", None),  # no expression
        ('"Who won the 2022 World Cup?"', None),
        ("What is 7 + 1? And 2 + 2?", None),  # two expressions: which one is asked is unclear
        ("Is it true that 1 + 1 is 1?", None),  # yes or no: the value is not the answer
        ("Solve the division: 7 / 2", None),  # not a whole number
        ("Divide 5 / 0", None),
        ("What is 2.5 + 1?", None),  # not integers
        ("Round 1e3 + 2", None),
    ],
)
def test_the_solver_answers_one_integer_expression_only(question: str, answer: str | None) -> None:
    assert solve_arithmetic(question) == answer


def test_solved_answers_replace_the_proposers_which_the_record_keeps() -> None:
    proposed = [Sample("What is 10 - 8?", "-2", "sums_1digit"), Sample("48", "120", "sums_2digit")]
    solved = [with_answer(s, "solved") for s in proposed]
    assert solved == [
        Sample("What is 10 - 8?", "2", "sums_1digit", proposed="-2"),
        Sample("48", "", "sums_2digit", proposed="120"),
    ]
    assert [with_answer(s, "proposed") for s in proposed] == proposed
    right = with_answer(Sample("What is 2 * 3?", "6", "products"), "solved")
    synthetic = [(s, 1.0) for s in [*solved, right]]
    assert [(ex.question, ex.answer) for ex in dpsda.training_examples(synthetic)] == [
        ("What is 10 - 8?", "2"),
        ("What is 2 * 3?", "6"),
    ]
    assert dpsda.proposed_right(synthetic) == 1  # of the 2 trained on, the proposer had 2 * 3 right
    assert dpsda.proposed_right([(s, 1.0) for s in proposed]) is None


def test_the_synthetic_file_keeps_the_proposers_answer_and_reads_back(tmp_path: Path) -> None:
    synthetic = [
        (Sample("What is 10 - 8?", "2", "sums_1digit", proposed="-2"), 3.0),
        (Sample("What is 1 + 1?", "2", "sums_1digit"), 1.5),
    ]
    path = tmp_path / "synthetic.jsonl"
    dpsda.write_synthetic(path, synthetic)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["proposed"] == "-2" and "proposed" not in rows[1]
    assert dpsda.read_synthetic(path) == synthetic


def test_a_tiny_run_with_solved_answers_evolves_samples_labelled_by_their_questions(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = load_config(
        "smoke",
        [
            f"run.output_dir={out}",
            "dpsda.answers=solved",
            "dpsda.samples=2",
            "dpsda.iterations=2",  # proposals, then rewrites
            "dpsda.sft_steps=1",
            "dpsda.grpo_steps=1",
            "dpsda.max_new_tokens=12",
            "eval.before=false",
            "eval.after=false",
        ],
    )
    results = dpsda.run(cfg)
    rows = [json.loads(line) for line in (out / "evolution.jsonl").read_text().splitlines()]
    samples = [s for row in rows for s in row["samples"]]
    assert len(samples) == 4 and all("proposed" in s for s in samples)
    assert [s["answer"] for s in samples] == [solve_arithmetic(s["question"]) or "" for s in samples]
    synthetic = dpsda.read_synthetic(out / "synthetic.jsonl")
    assert results["synthetic"]["answers"] == "solved"
    assert results["synthetic"]["with_answer"] == len(dpsda.training_examples(synthetic))
    assert results["synthetic"]["proposed_right"] == dpsda.proposed_right(synthetic)


def test_an_unknown_answer_source_fails_validation_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="dpsda.answers"):
        load_config("smoke", ["dpsda.answers=oracle"])
