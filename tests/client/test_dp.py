"""Differentially private rewards at the client: the mechanisms, the ledger, the cache, the budgets.

Clients here are answer-based (labelled sums), built and queried as the server would: through
:meth:`Client.respond` and the protocol's encoding. Distribution checks use a seeded generator and a
binomial interval of 4 standard deviations, so they fail only when the mechanism is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedgrpo.client import Client
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease, debias_bit
from fedgrpo.client.privacy_ledger import Accountant, example_id
from fedgrpo.config import ConfigError, load_config
from fedgrpo.data import Example
from fedgrpo.flower.client_app import node_privacy
from fedgrpo.flower.codec import from_records, to_records
from fedgrpo.protocol import (
    CompetenceItem,
    CompetenceReply,
    CompetenceRequest,
    ItemScores,
    ProtocolError,
    RewardItem,
    RewardReply,
    RewardRequest,
    decode,
    encode,
)
from fedgrpo.simulation.in_process import run_in_process
from tests.wire import header, join, split


def _sums(n: int) -> list[Example]:
    return [Example(f"q{i}", "sums", f"What is {i} + {i % 7}?", str(i + i % 7)) for i in range(n)]


def _client(
    examples: list[Example], epsilon: float = 1.0, budget: float | None = None, **release: object
) -> Client:
    policy = PrivacyPolicy(epsilon, budget, 1e-5, max_answers_per_question=release.pop("max_answers", 8))
    return Client("org", examples, privacy=PrivateRelease(policy, seed=0, **release))


def _ask(client: Client, items: list[tuple[str, list[str]]], rid: str = "r") -> RewardReply:
    request = RewardRequest(rid, client.name, [RewardItem(str(k), q, c) for k, (q, c) in enumerate(items)])
    reply = decode(client.handle(encode(request)))
    assert isinstance(reply, RewardReply)
    return reply


def _within(successes: int, n: int, p: float) -> bool:
    return abs(successes - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_randomised_response_keeps_a_bit_with_probability_e_eps_over_1_plus_e_eps() -> None:
    examples = _sums(3000)
    for epsilon in (0.5, 2.0):
        client = _client(examples, epsilon)
        right = [(ex.question, [f"<answer>{ex.answer}</answer>"]) for ex in examples]
        reply = _ask(client, right)
        rewards = [item.rewards[0] for item in reply.items]
        assert set(rewards) <= {0.0, 1.0}  # a bit (the server adds the format reward)
        kept = sum(r == 1.0 for r in rewards)
        assert _within(kept, len(examples), math.exp(epsilon) / (1 + math.exp(epsilon)))
        # the server's debiasing recovers the true rate (all 1 here) from the noisy bits
        debiased = sum(debias_bit(r, epsilon) for r in rewards) / len(rewards)
        assert abs(debiased - 1.0) < 4 * math.sqrt(1 / len(rewards)) / (1 - 2 / (1 + math.exp(epsilon)))


def test_laplace_scores_are_clipped_to_the_unit_interval_with_the_right_spread() -> None:
    release = PrivateRelease(PrivacyPolicy(8.0, None), "continuous", seed=1)
    released = [release.rewards(f"q{i}", ["no tag"], [0.5], "model")[0] for i in range(4000)]
    assert all(r is not None and 0.0 <= r <= 1.0 for r in released)
    deviation = sum(abs(r - 0.5) for r in released if r is not None) / len(released)
    assert abs(deviation - 1 / 8) < 0.01  # E|Laplace(b)| = b = 1/eps (clipping beyond 0.5 is rare)


def test_each_example_is_charged_alone_and_at_its_budget_gets_free_noise_never_none() -> None:
    accountant = Accountant(1e-5)
    spends = [accountant.epsilon({"rr:1.0": n}) for n in (0, 1, 2, 5, 20, 80)]
    assert spends[0] == 0 and spends == sorted(spends) and abs(spends[1] - 1.0) < 1e-2
    assert spends[-1] < 80  # PLD composition beats adding epsilons up

    examples = _sums(5)
    client = _client(examples, epsilon=1.0, budget=3.0)
    assert client.privacy is not None
    items = [(ex.question, [f"<answer>{a}</answer>" for a in range(8)]) for ex in examples]
    reply = _ask(client, items)
    assert all(r in (0.0, 1.0) for item in reply.items for r in item.rewards)  # never None
    fit = max(n for n in range(9) if accountant.epsilon({"rr:1.0": n}) <= 3.0)
    assert 3 <= fit < 8
    ledger = client.privacy.ledger
    assert [ledger.examples[example_id(ex.question)] for ex in examples] == [{"rr:1.0": fit}] * 5
    report = client.privacy.report()
    assert report["examples_at_budget"] == 5 and report["examples_charged"] == 5
    assert report["per_example_epsilon_max"] == round(accountant.epsilon({"rr:1.0": fit}), 6) <= 3.0
    assert report["model_releases_uncovered"] == 0 and client.privacy.stats.over_privacy_budget == 5 * (
        8 - fit
    )
    # the per-release total composes every value sent (noise too): a function of what was asked
    assert reply.privacy_spent == (accountant.epsilon({"rr:1.0": 40}), 1e-5)
    again = _ask(client, [(ex.question, ["<answer>-1</answer>"]) for ex in examples], "r2")
    assert all(item.rewards[0] in (0.0, 1.0) for item in again.items)  # past the query budget: noise
    assert [ledger.examples[example_id(ex.question)] for ex in examples] == [{"rr:1.0": fit}] * 5


def test_the_reported_epsilon_never_exceeds_the_budget_the_check_accepted() -> None:
    # 8 values at 0.5 sum to the budget 4 (basic composition); the discretised PLD alone gives 4.0076
    client = _client(_sums(1), epsilon=0.5, budget=4.0)
    assert client.privacy is not None
    _ask(client, [(_sums(1)[0].question, [f"<answer>{a}</answer>" for a in range(8)])])
    assert client.privacy.ledger.examples[example_id(_sums(1)[0].question)] == {"rr:0.5": 8}
    assert client.privacy.report()["per_example_epsilon_max"] <= 4.0
    assert Accountant(1e-5).epsilon({"rr:0.5": 8}) <= 4.0 < Accountant(1e-5).epsilon({"rr:0.5": 9})


def test_the_same_question_and_normalised_answer_always_get_the_same_value_at_no_cost() -> None:
    examples = _sums(50)
    client = _client(examples, epsilon=0.3)
    assert client.privacy is not None
    items = [
        (ex.question, [f"<answer>{ex.answer}</answer>", f"So <answer> {ex.answer}.0 </answer>"])
        for ex in examples
    ]
    first = _ask(client, items)
    charged = dict(client.privacy.ledger.examples)
    assert charged == {example_id(ex.question): {"rr:0.3": 1} for ex in examples}  # one per answer
    spent = first.privacy_spent
    for item in first.items:
        assert item.rewards[0] == item.rewards[1]
    for repeat in range(5):
        again = _ask(client, items, f"again{repeat}")
        assert [i.rewards for i in again.items] == [i.rewards for i in first.items]
        assert again.privacy_spent == spent
    assert client.privacy.ledger.examples == charged


def test_at_most_n_distinct_answers_per_question_are_released_and_later_ones_get_free_noise() -> None:
    examples = _sums(3)
    client = _client(examples, max_answers=2)
    assert client.privacy is not None
    items = [(ex.question, [f"<answer>{a}</answer>" for a in range(5)]) for ex in examples]
    reply = _ask(client, items)
    assert all(r in (0.0, 1.0) for item in reply.items for r in item.rewards)
    assert [client.privacy.ledger.examples[example_id(ex.question)] for ex in examples] == [{"rr:1.0": 2}] * 3
    assert client.privacy.stats.over_query_budget == 3 * 3 and client.privacy.stats.noise == 9
    # every value stays as first sent, noise included (a non-holder's would too)
    assert _ask(client, items, "r2").items == reply.items


def test_a_probing_server_recovers_no_more_labels_than_one_query_allows() -> None:
    """The server asks about every question's true answer, once or 30 times, and takes the majority of
    what came back as its guess of "is this the label". With the cache 20 queries tell it exactly what
    one does; without the cache averaging recovers nearly every label."""
    examples = _sums(200)
    epsilon = 1.0
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))

    def recovered(client: Client, repeats: int) -> int:
        votes = [0] * len(examples)
        for r in range(repeats):
            reply = _ask(
                client, [(ex.question, [f"<answer>{ex.answer}</answer>"]) for ex in examples], f"p{r}"
            )
            for k, item in enumerate(reply.items):
                votes[k] += 1 if item.rewards[0] == 1.0 else -1
        return sum(v > 0 for v in votes)

    once = recovered(_client(examples, epsilon), 1)
    cached = recovered(_client(examples, epsilon), 20)
    assert cached == once and _within(once, len(examples), keep)
    uncached = recovered(_client(examples, epsilon, remember=False), 21)
    assert uncached > 0.95 * len(examples) and uncached > once + 4 * math.sqrt(len(examples))


def test_the_ledger_is_the_organisations_a_new_run_name_resets_nothing(tmp_path: Path) -> None:
    """Two Client objects over one state file stand for two ClientApp processes of one organisation;
    a third, for a run the server named differently, finds the same spend and cache."""
    examples = _sums(20)
    state = tmp_path / "org.privacy.json"
    items = [(ex.question, [f"<answer>{ex.answer}</answer>", "<answer>0</answer>"]) for ex in examples]
    first = _ask(_client(examples, 0.2, state_path=state, run="run-a"), items)
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    saved = json.loads(state.read_text())
    assert saved["runs"]["run-a"]["per_release_epsilon"] == first.privacy_spent[0]  # for the next process
    other = _client(examples, 0.2, state_path=state, run="run-a")
    other.privacy.rng = __import__("numpy").random.default_rng(99)  # fresh noise would differ
    second = _ask(other, items, "r2")
    assert [i.rewards for i in second.items] == [i.rewards for i in first.items]
    assert second.privacy_spent == first.privacy_spent and first.privacy_spent[0] > 0
    renamed = _client(examples, 0.2, state_path=state, run="run-b")
    renamed.privacy.rng = __import__("numpy").random.default_rng(7)
    third = _ask(renamed, items, "r3")
    assert [i.rewards for i in third.items] == [i.rewards for i in first.items]  # the cache holds
    assert third.privacy_spent == (0.0, 1e-5)  # nothing new was released in run-b
    after = json.loads(state.read_text())
    assert after["examples"] == saved["examples"] and set(after["runs"]) == {"run-a", "run-b"}
    assert after["summary"]["examples_charged"] == 20 and after["owner"] is None


def test_competence_bits_are_randomised_cached_and_counted_as_uncovered_model_releases() -> None:
    class Model:
        def evaluate(self, question, candidates):  # pragma: no cover - not used here
            raise AssertionError

        def answer(self, question: str) -> str:
            return "1"

    policy = PrivacyPolicy(0.5, 3.0)
    client = Client("org", [], Model(), privacy=PrivateRelease(policy, seed=3))  # type: ignore[arg-type]
    items = [CompetenceItem(str(k), f"q{k}?", "1") for k in range(20)]
    reply = client.respond(CompetenceRequest("c", "org", items))
    assert isinstance(reply, CompetenceReply) and set(reply.bits) == {0, 1}  # all true, some flipped
    assert client.respond(CompetenceRequest("c2", "org", items)).bits == reply.bits  # cached
    many = [CompetenceItem(str(k), f"other {k}?", "1") for k in range(200)]
    more = client.respond(CompetenceRequest("c3", "org", many))
    assert isinstance(more, CompetenceReply) and len(more.bits) == 200  # no example is charged
    assert client.privacy is not None and client.privacy.ledger.examples == {}
    assert client.privacy.report()["model_releases_uncovered"] == 220


def test_the_spend_crosses_both_encodings_and_bad_spends_are_refused() -> None:
    reward = RewardReply(
        "r", "c", [ItemScores("0", [1.0])], {"answer": 1, "model": 0, "none": 0}, (2.5, 1e-5)
    )
    competence = CompetenceReply("q", "c", [0, 1], (0.5, 0.0))
    for message in (reward, competence):
        assert decode(encode(message), client="c") == message == from_records(to_records(message), client="c")
    plain = RewardReply("r", "c", [], {"answer": 0, "model": 0, "none": 0})
    assert "privacy_spent" not in split(encode(plain))[0] and decode(encode(plain)).privacy_spent is None
    for bad in ([math.nan, 0.0], [-1.0, 0.0], [1.0, 1.5], [math.inf, 0.0], [1.0, -0.1]):
        text = join(header("reward_reply", methods=[0, 0], shape=[[0, 0]], privacy_spent=bad))
        with pytest.raises(ProtocolError, match="privacy_spent"):
            decode(text)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("clients.privacy.budget_epsilon=0", "clients.privacy.budget_epsilon"),
        ("clients.privacy.epsilon=-1", "clients.privacy.epsilon"),
        ("clients.privacy.binary_mechanism=laplace", "clients.privacy.binary_mechanism"),
        ("clients.privacy.continuous_mechanism=randomized_response", "clients.privacy.continuous_mechanism"),
        ("clients.privacy.continuous_mechanism=gaussian", "clients.privacy.delta_per_value"),
    ],
)
def test_a_bad_privacy_setting_fails_at_validation_naming_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config("smoke", ["clients.privacy.enabled=true", override])


def test_an_organisations_node_config_sets_its_own_privacy_and_bad_values_name_the_key(tmp_path) -> None:
    cfg = load_config("smoke")
    data = tmp_path / "org.jsonl"
    assert node_privacy(cfg, {}, data) is None
    release = node_privacy(cfg, {"privacy-epsilon": "0.5", "privacy-budget-epsilon": "none"}, data)
    assert release is not None and release.policy.epsilon == 0.5 and release.policy.budget_epsilon is None
    assert release.state_path == tmp_path / "org.jsonl.privacy.json" and release.owner == "org.jsonl"
    with pytest.raises(ValueError, match="privacy-budget-epsilon"):
        node_privacy(cfg, {"privacy-epsilon": 1, "privacy-budget-epsilon": 0}, data)
    with pytest.raises(ValueError, match="privacy-continuous"):
        node_privacy(cfg, {"privacy-epsilon": 1, "privacy-continuous": "randomized_response"}, data)
    with pytest.raises(ValueError, match="needs privacy-epsilon"):
        node_privacy(cfg, {"privacy-max-answers": 2}, data)


def test_results_json_reports_the_epsilon_each_client_spent(tmp_path: Path) -> None:
    over = [
        f"run.output_dir={tmp_path / 'run'}",
        "eval.before=false",
        "eval.after=false",
        "grpo.max_steps=2",
        "clients.privacy.enabled=true",
        "clients.privacy.epsilon=0.5",
    ]
    results = run_in_process(load_config("smoke", over))
    privacy = results["privacy"]
    assert set(privacy) <= {"client-0", "client-1", "client-2"} and privacy
    assert all(p["epsilon"] >= 0 and p["delta"] == 1e-5 for p in privacy.values())
    assert all(p["epsilon"] > 0 for p in privacy.values())  # every value sent counts, noise too
    for p in privacy.values():  # the per-example figures, from each simulated client's own ledger
        assert 0 <= p["per_example_epsilon_max"] <= p["budget_epsilon"] == 8.0
        assert p["examples_at_budget"] == 0 and p["training_privacy_composed"] is False
    assert any(p["per_example_epsilon_max"] > 0 for p in privacy.values())
    assert results["communication"]["fed/rewards_received"] > 0
