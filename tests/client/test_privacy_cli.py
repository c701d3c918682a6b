"""``fedgrpo privacy show|reset STATE``: the organisation sees what it spent, per run and in total, and
resets its ledger only when it says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgrpo.cli import main
from fedgrpo.client import Client
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease
from fedgrpo.data import Example
from fedgrpo.protocol import RewardItem, RewardRequest, encode


def _answer(state: Path, run: str, questions: range) -> None:
    examples = [Example(f"q{i}", "sums", f"What is {i} + 1?", str(i + 1)) for i in range(10)]
    release = PrivateRelease(PrivacyPolicy(1.0, 2.5), seed=0, state_path=state, run=run, owner="org.jsonl")
    client = Client("org", examples, privacy=release)
    items = [
        RewardItem(str(k), examples[i].question, ["<answer>1</answer>", "<answer>2</answer>"])
        for k, i in enumerate(questions)
    ]
    client.handle(encode(RewardRequest("r", "org", items)))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["privacy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_reports_each_run_and_the_total_and_reset_needs_yes(tmp_path: Path, capsys) -> None:
    state = tmp_path / "org.jsonl.privacy.json"
    _answer(state, "server-run-1", range(6))
    _answer(state, "renamed-by-server", range(4, 10))  # questions 4, 5 asked again, new answers cached
    code, out, _ = _run(capsys, "show", str(state))
    shown = json.loads(out)
    assert (
        code == 0
        and shown["owner"] == "org.jsonl"
        and set(shown["runs"]) == {"server-run-1", "renamed-by-server"}
    )
    assert (
        shown["runs"]["server-run-1"]["answer_checks"] == 12
        and shown["runs"]["renamed-by-server"]["answer_checks"] == 8
    )
    total = shown["total"]
    assert total["examples_charged"] == 10 and total["budget_epsilon"] == 2.5
    assert total["examples_at_budget"] == 10 and total["per_example_epsilon_max"] <= 2.5  # two values each
    assert '"cache"' not in out and "What is" not in out  # no question text, no example ids

    before = state.read_bytes()
    code, _, err = _run(capsys, "reset", str(state))
    assert code == 2 and "--yes" in err and state.read_bytes() == before
    code, out, _ = _run(capsys, "reset", str(state), "--yes")
    assert code == 0 and json.loads(out)["reset"]["runs"] == ["renamed-by-server", "server-run-1"]
    shown = json.loads(_run(capsys, "show", str(state))[1])
    assert shown["runs"] == {} and shown["resets"][0]["total"]["examples_charged"] == 10
    _answer(state, "after-reset", range(2))
    assert json.loads(_run(capsys, "show", str(state))[1])["total"]["examples_charged"] == 2


def test_show_of_a_missing_state_fails_with_a_message(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "show", str(tmp_path / "none.json"))
    assert code == 1 and "no privacy state" in err


def test_a_format_1_state_kept_per_run_is_taken_over_with_every_cached_value_charged(
    tmp_path: Path, capsys
) -> None:
    state = tmp_path / "old.privacy.json"
    old_cache = {"what is 1 + 1?": {"a:2": 1.0, "a:3": 0.0, "competence": 1.0}}
    state.write_text(
        json.dumps({"format": 1, "run": "old", "counts": {"rr": 3}, "epsilon": 3.0, "cache": old_cache})
    )
    code, _, err = _run(capsys, "show", str(state))
    assert code == 1 and "format 1" in err  # read-only: converted by the client, not by show
    _answer(state, "new", range(1))  # question 0 is "What is 0 + 1?": a new example
    saved = json.loads(state.read_text())
    assert saved["format"] == 2 and saved["cache"]["what is 1 + 1?"] == old_cache["what is 1 + 1?"]
    assert set(saved["runs"]) == {"old", "new"} and saved["summary"]["examples_charged"] == 2
