"""suites/privacy.yaml: its header's arithmetic (each run's per-example epsilon and how many answer
checks an example gets) holds for the real release layer and ledger, and its clean run is the trust
suite's (same base and overrides), so the two suites' rows compare."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedgrpo.client.factory import private_release
from fedgrpo.suite.spec import load_suite, plan
from tests.helpers import load_script

SUITES = Path(__file__).resolve().parents[2] / "suites"
# run -> (per-example epsilon at delta 1e-5, answer checks one example gets), as the header says
HEADER = {"pex8": (8.0, 4), "pex4": (4.0, 4), "pex2": (2.0, 2), "pex1": (1.0, 1), "pex4-shown": (4.0, 4)}


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    spec, folder = load_suite(SUITES / "privacy.yaml")
    return {r.name: r.config for r in plan(spec, folder, check_data=False)}


def test_the_privacy_suite_shares_the_trust_suites_base_and_overrides() -> None:
    privacy, trust = (yaml.safe_load((SUITES / f"{n}.yaml").read_text()) for n in ("privacy", "trust"))
    assert (privacy["base"], privacy["overrides"]) == (trust["base"], trust["overrides"])


def test_clean_is_private_nowhere_and_every_other_run_is_in_the_header(runs: dict) -> None:
    assert not runs["clean"].clients.privacy.enabled
    assert {n for n, cfg in runs.items() if cfg.clients.privacy.enabled} == set(HEADER)
    # pex4-shown is pex4 with membership not hidden, and nothing else: the pair measures hiding's cost
    shown, hidden = runs["pex4-shown"].clients.privacy, runs["pex4"].clients.privacy
    assert not shown.hide_membership and shown.model_copy(update={"hide_membership": True}) == hidden


@pytest.mark.parametrize("name", sorted(HEADER))
def test_an_example_asked_about_every_answer_spends_what_the_header_says(runs: dict, name: str) -> None:
    cfg = runs[name]
    release = private_release(cfg, cfg.clients.privacy, "client-0")
    assert release is not None
    question = "What is 3 + 4?"
    answers = [f"<answer>{k}</answer>" for k in range(2 * cfg.clients.privacy.max_answers_per_question)]
    for _ in range(2):  # asked twice: the second time every value comes from the cache
        release.rewards(question, answers, [1.0] * len(answers), "answer")
    epsilon, checks = HEADER[name]
    report = release.report()
    assert report["per_example_epsilon_max"] == pytest.approx(epsilon, abs=1e-3)
    assert report["per_example_epsilon_max"] <= cfg.clients.privacy.budget_epsilon + 1e-9
    assert (report["delta"], report["examples_charged"], report["examples_at_budget"]) == (1e-5, 1, 1)
    assert release.ledger.runs[cfg.name]["answer_checks"] == checks
    assert release.stats.released == len(answers) and release.stats.cached == len(answers)


@pytest.mark.slow  # builds the default preset's clients twice (about 10 s)
def test_the_budget_bench_caps_every_example_and_sends_coins_past_the_budget() -> None:
    """``python bench/hidden_membership.py --budgets`` (docs/trust.md), on a few questions."""
    bench = load_script("bench/hidden_membership.py")
    capped, loose = bench.measure(1.0, 6, 1.0, 4), bench.measure(1.0, 6, 4.0, 4)
    assert capped["per_example_epsilon_max"] == pytest.approx(1.0, abs=1e-3)
    assert capped["answer_checks"] == 6 and capped["over_budget"] > 0  # one check per example
    assert (
        loose["over_budget"] == 0
        and loose["answer_checks"] == capped["answer_checks"] + capped["over_budget"]
    )
