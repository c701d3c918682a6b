"""Bad configurations fail before any model loads, naming the field and what is allowed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.config import ConfigError, load_config


def test_presets_load_and_overrides_apply() -> None:
    cfg = load_config("smoke", ["grpo.max_steps=7", "data.domains=[sums_1digit, syllogism]", "seed=3"])
    assert cfg.grpo["max_steps"] == 7 and cfg.seed == 3
    assert [d.name for d in cfg.data.domain_specs()] == ["sums_1digit", "syllogism"]
    default = load_config("default")
    assert default.model.name_or_path == "smollm2" and default.data.num_clients >= 5
    assert default.federation.experts_per_question == 2 and default.num_generations == 8
    assert len(default.data.domains) >= 3


def test_graph_smoke_is_smoke_with_the_graph_and_a_client_model() -> None:
    """graph-smoke names smoke as its base: every section it does not write is smoke's, baselines too."""
    smoke, graph = load_config("smoke").model_dump(), load_config("graph-smoke").model_dump()
    assert graph["federation"]["selector"] == "confidence-graph"
    assert graph["clients"]["model"] == "tiny-random"
    assert graph["federation"]["experts_per_question"] == smoke["federation"]["experts_per_question"]
    for section in ("data", "grpo", "eval", "run", "fedpetuning", "dpsda", "model"):
        assert graph[section] == smoke[section], section
    assert smoke["fedpetuning"]["rounds"] == 2 and smoke["dpsda"]["samples"] == 8


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.colour=blue", "data.colour"),
        ("grpo.num_generations=1", "grpo.num_generations"),
        ("federation.experts_per_question=9", "experts_per_question"),
        ("model.name_or_path=/no/such/model", "/no/such/model"),
        ("data.domains=[sums_1digit, astrology]", "astrology"),
        ("federation.selector=bogus", "federation.selector"),
        ("grpo.not_a_trl_field=1", "grpo.not_a_trl_field"),
        ("grpo.scale_rewards=group", "federation.aggregation"),
        ("data.alpha=0", "data.alpha"),
        ("grpo.max_completion_length=-4", "grpo.max_completion_length"),
        ("grpo.learning_rate=-0.001", "grpo.learning_rate"),
        ("grpo.learning_rate=fast", "grpo.learning_rate must be a float"),
        ("grpo.per_device_train_batch_size=6", "divisible by num_generations"),
        ("grpo.max_steps=0", "grpo.max_steps"),
        ("grpo.log_completions=3", "grpo.log_completions must be a bool"),
        ("data.domains=[{name: g, source: gsm8k_jsonl, path: /no/such.jsonl}]", "no file '/no/such.jsonl'"),
    ],
)
def test_bad_values_name_the_field(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("smoke", [override])
    assert needle in str(err.value)


def test_a_float_written_with_an_exponent_is_read_as_a_number() -> None:
    # YAML 1.1 reads 2e-4 (no dot) as a string; the config reads it as the number it spells
    assert load_config("smoke", ["grpo.learning_rate=2e-4"]).grpo["learning_rate"] == 2e-4


def test_show_config_prints_every_effective_grpo_setting() -> None:
    cfg = load_config("smoke")
    for key in ("beta", "temperature", "logging_steps", "report_to", "max_steps", "num_generations"):
        assert key in cfg.grpo, key
    args = cfg.grpo_arguments(Path("/tmp/unused"))
    assert args.beta == cfg.grpo["beta"] and args.temperature == cfg.grpo["temperature"]
    assert args.scale_rewards == "none" and args.seed == cfg.seed  # the settings FedGRPO owns


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["federation.transport=flower-deployment", "flower.insecure=true"],
            "server.questions, server.heldout",
        ),
        (["server.questions=/no/such/file.jsonl"], "no file"),
        (
            [
                "federation.transport=flower-deployment",
                "flower.insecure=true",
                "server.questions={q}",
                "server.heldout={q}",
            ],
            "flower.num_supernodes",
        ),
        (["server.questions={q}"], "server.* files are for federation.transport=flower-deployment"),
    ],
)
def test_deployment_needs_the_servers_own_files(tmp_path, overrides: list[str], needle: str) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "What is 1 + 1?"}\n')
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config("smoke", [o.format(q=q) for o in overrides])
    ok = ["federation.transport=flower-deployment", "flower.insecure=true", "flower.num_supernodes=2"]
    cfg = load_config("smoke", [*ok, f"server.questions={q}", f"server.heldout={q}"])
    assert cfg.server.questions == str(q)


def test_unknown_domain_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="sums_1digit"):
        load_config("smoke", ["data.domains=[astrology]"])


def test_corrupt_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {max_steps: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config("smoke", ["grpo.max_steps"])


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("federation.experts_per_question=5", ["experts_per_question"]),
        # robust aggregation with too few experts per question, and why
        ("federation.aggregation=median", ["federation.aggregation=median", "experts_per_question >= 3"]),
        # an adversarial behaviour that does not exist, and one for a client that does not
        ("clients.adversaries={client-1: liar}", ["clients.adversaries.client-1", "'always-high'"]),
        ("clients.adversaries={client-9: flip}", ["clients.adversaries", "client-9"]),
    ],
)
def test_cli_rejects_bad_config_without_loading_a_model(override: str, needles: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fedgrpo.cli", "run", "smoke", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert all(n in proc.stderr for n in needles) and "loading policy" not in proc.stderr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["federation.selector=confidence-graph"], "clients.model"),
        (
            ["federation.selector=confidence-graph", "clients.model=tiny-random", "data.num_auxiliary=0"],
            "data.num_auxiliary",
        ),
        (["federation.selector=oracle"], "allow_oracle"),
        (["federation.epsilon=2"], "federation.epsilon"),
        (["federation.online_update_rate=0"], "federation.online_update_rate"),
        (["clients.samples=0"], "clients.samples"),
        (["clients.model=/no/such/client/model"], "/no/such/client/model"),
        (
            ["clients.model=tiny-random", "clients.expert.method=grpo", "clients.expert.batch_size=6"],
            "must be a multiple of clients.expert.num_generations",
        ),
    ],
)
def test_selection_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides)
    assert needle in str(err.value)


def test_graph_preset_and_oracle_opt_in() -> None:
    cfg = load_config("graph-smoke")
    assert cfg.federation.selector == "confidence-graph" and cfg.clients.model == "tiny-random"
    assert load_config("smoke").clients.model is None  # smoke carries no client model
    default = load_config("default")  # the paper's method: graph routing, each client's own expert
    assert default.federation.selector == "confidence-graph"
    assert default.clients.model == "smollm2" and default.clients.expert.method == "sft"
    no_gt = load_config("default", ["data.setting=no-ground-truth"])
    assert no_gt.data.setting == "no-ground-truth"
    with pytest.raises(ConfigError, match="no-ground-truth needs clients.model"):
        load_config("smoke", ["data.setting=no-ground-truth"])
    with pytest.raises(ConfigError, match="clients.expert.method needs clients.model"):
        load_config("smoke", ["clients.expert.method=sft"])
    oracle = load_config("smoke", ["federation.selector=oracle", "federation.allow_oracle=true"])
    assert oracle.federation.selector == "oracle"
