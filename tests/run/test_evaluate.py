"""Answer extraction and held-out scoring on completions we write ourselves (no model, no generation):
strict accuracy reads only the tagged answer, answer accuracy the final answer wherever it is."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from fedgrpo.data import Example, generate, make_qid
from fedgrpo.method.answers import final_answer, last_number
from fedgrpo.run.evaluate import DomainAccuracy, accuracy_table, score_completions, to_json, wilson_interval


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("3 + 4 = 7. <answer>7</answer>", "7"),
        ("I think 12, but <answer> 13 </answer> and then 99", "13"),  # the tag wins over later numbers
        ("so the answer is 42.", "42"),
        (r"We get $\boxed{7}$.", "7"),
        ("First 3 plus 4 gives 7, then 7 times 2 is 14", "14"),  # several numbers: the last one
        ("The total is 1,250 apples.", "1250"),
        ("<answer></answer> so it is 5", "5"),  # an empty tag is no answer: look in the text
        ("I do not know.", None),
        ("", None),
    ],
)
def test_final_answer(completion: str, expected: str | None) -> None:
    assert final_answer(completion) == expected


def test_last_number_is_the_fallback() -> None:
    assert last_number("from -3 to 2.5, then 1,000 or 7") == "7"
    assert last_number("-3.5") == "-3.5"
    assert last_number("no digits") is None


def test_final_answer_outside_the_main_thread() -> None:
    """math-verify's timeout needs the main thread; elsewhere (a Flower ServerApp) it still works."""
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(final_answer(r"it is \boxed{\frac{1}{2}} here, not 3")))
    t.start()
    t.join()
    assert got == [r"\frac{1}{2}"]


def _math(question: str, answer: str) -> Example:
    return Example(make_qid("math", question), "math", question, answer)


def test_untagged_answers_count_for_answer_accuracy_only() -> None:
    examples = [_math(f"What is {i} + 1?", str(i + 1)) for i in range(6)]
    completions = [
        "<answer>1</answer>",  # tagged, right
        "1 + 1 = 2, so the answer is 2.",  # untagged, right
        r"The sum is $\boxed{3}$",  # boxed, right
        "<answer>9</answer> although 4",  # tagged wrong: the tag is the final answer
        "I am not sure.",  # no answer at all
        "5 + 1 = 6? No: 7",  # untagged, wrong: the last number is the answer
    ]
    acc = score_completions("math", examples, completions)
    assert (acc.n, acc.correct, acc.answer_correct) == (6, 1, 3)
    assert acc.accuracy == pytest.approx(1 / 6) and acc.answer_accuracy == pytest.approx(3 / 6)
    assert acc.format_rate == pytest.approx(2 / 6)
    assert (acc.answer_ci_low, acc.answer_ci_high) == pytest.approx(wilson_interval(3, 6))
    assert (acc.ci_low, acc.ci_high) == pytest.approx(wilson_interval(1, 6))


def test_reasoning_gym_scorer_judges_both_accuracies() -> None:
    """A real domain: its own exact scorer judges the untagged answer as it judges the tagged one."""
    examples = generate("sums_2digit", 4, seed=3)
    completions = [
        f"<answer>{examples[0].answer}</answer>",
        f"Adding them up gives {examples[1].answer}.",
        f"Adding them up gives {int(examples[2].answer) + 1}.",
        "no idea",
    ]
    acc = score_completions("sums_2digit", examples, completions)
    assert (acc.correct, acc.answer_correct) == (1, 2)
    assert acc.accuracy < acc.answer_accuracy


def test_all_tagged_completions_score_the_same_both_ways() -> None:
    examples = [_math(f"What is {i} + 2?", str(i + 2)) for i in range(4)]
    completions = [f"<answer>{i + 2 if i % 2 else i}</answer>" for i in range(4)]
    acc = score_completions("math", examples, completions)
    assert acc.correct == acc.answer_correct == 2 and acc.format_rate == 1.0


def test_score_completions_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 examples but 1 completions"):
        score_completions("math", [_math("a", "1"), _math("b", "2")], ["1"])


def test_old_results_without_answer_fields_still_load() -> None:
    acc = score_completions("math", [_math("What is 1 + 1?", "2")], ["it is 2"])
    stored = json.loads(json.dumps(to_json({"math": acc})))
    assert DomainAccuracy(**stored["math"]) == acc
    old = {k: v for k, v in stored["math"].items() if not k.startswith("answer_")}
    loaded = DomainAccuracy(**old)
    assert loaded.answer_correct is None and loaded.answer_accuracy is None
    assert "answer -" in accuracy_table({"math": loaded}, None).replace("  ", " ")


def test_table_shows_strict_and_answer_accuracy_before_and_after() -> None:
    examples = [_math(f"What is {i} + 1?", str(i + 1)) for i in range(4)]
    before = score_completions("math", examples, ["it is 1", "it is 2", "no", "<answer>4</answer>"])
    after = score_completions("math", examples, [f"<answer>{i + 1}</answer>" for i in range(4)])
    old_before = dataclasses.replace(before, answer_correct=None, answer_accuracy=None)
    table = accuracy_table({"math": before, "gsm_symbolic": old_before}, {"math": after})
    lines = table.splitlines()
    assert "before [95% CI]" in lines[0] and "after [95% CI]" in lines[0]
    assert max(len(line) for line in lines) <= 90
    strict, answer, tags = (
        next(line for line in lines if f" {m} " in line) for m in ("strict", "answer", "tags")
    )
    assert strict.split()[:3] == ["math", "4", "0.250"]
    assert strict.split()[4] == "0.250" and strict.split()[7] == "1.000"  # strict before, after
    assert answer.split()[1] == "0.750" and answer.split()[4] == "1.000"  # answer before, after
    assert tags.split()[1:] == ["0.250", "1.000"]
    # a domain only in `before`, from an old file: its answer cells are "-"
    old_lines = lines[lines.index(next(line for line in lines if line.startswith("gsm_symbolic"))) :][:3]
    assert old_lines[1].split()[1:] == ["-", "-"]
