"""``local-only``: FedGRPO's run with one organisation's rewards, the most competent one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgrpo.algorithms import run_method
from fedgrpo.algorithms.local_only import CHOICE_FILE
from fedgrpo.config import ConfigError, load_config


def test_the_most_competent_client_alone_scores_every_question_and_a_resume_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "alone"
    over = [f"run.output_dir={out}", "method=local-only", "eval.before=false", "grpo.max_steps=2"]
    results = run_method(load_config("graph-smoke", over))
    choice = results["local_only"]
    competence, held = choice["competence"], choice["examples"]
    assert set(competence) == {"client-0", "client-1", "client-2"}
    best = max(sorted(competence), key=lambda c: (competence[c], held[c]))
    assert choice["client"] == best and json.loads((out / CHOICE_FILE).read_text()) == choice
    per_client = results["communication"]["fed/bytes_up_per_client"]
    assert set(per_client) == {best} and per_client[best] > 0  # no other organisation was asked
    assert results["steps"] == 2 and results["selection"] is None  # one client asked about every question

    (out / CHOICE_FILE).write_text(json.dumps({**choice, "client": "client-9"}))  # resume reads the file
    with pytest.raises(RuntimeError, match="chosen client client-9 is not available"):
        run_method(load_config("graph-smoke", [*over, "grpo.max_steps=3"]), resume=True)


def test_local_only_needs_the_clients_models_to_rank_them() -> None:
    cfg = load_config("smoke", ["method=local-only", "federation.selector=all"])
    with pytest.raises(ConfigError, match="clients.model"):
        run_method(cfg)
