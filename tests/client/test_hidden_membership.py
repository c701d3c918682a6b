"""Hidden membership: with privacy on, a server cannot tell a client that holds a question from one
that does not, beyond what epsilon allows.

For any epsilon-DP release, the best a distinguisher can do from one reply is a total-variation
advantage of ``(e^eps - 1) / (e^eps + 1)``. Replies are compared as the server gets them (encoded
bytes): the same shape, the same method counts and privacy spend, and reward distributions whose
empirical distance stays within that bound (4 standard deviations of sampling slack).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from fedgrpo.client import AnswerEvaluator, Client, DualEvaluator, Evaluation
from fedgrpo.client.privacy import PrivacyPolicy, PrivateRelease
from fedgrpo.client.privacy_ledger import charge_key, example_id
from fedgrpo.data import Example
from fedgrpo.protocol import RewardItem, RewardReply, RewardRequest, decode, encode
from tests.helpers import load_script
from tests.wire import split

N = 2000


def _sums(n: int, offset: int = 0) -> list[Example]:
    return [
        Example(f"q{i}", "sums", f"What is {i} + {i % 7}?", str(i + i % 7)) for i in range(offset, offset + n)
    ]


class ConstantModel:
    """A client model that gives every candidate the same score (no data of the client in it)."""

    def __init__(self, score: float) -> None:
        self.score = score

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        return Evaluation([self.score] * len(candidates), "model")

    def answer(self, question: str) -> str | None:
        return None


def _client(examples: list[Example], epsilon: float, seed: int, model=None, scores="binary") -> Client:
    release = PrivateRelease(PrivacyPolicy(epsilon, 8.0), scores, seed=seed)
    evaluator = DualEvaluator(AnswerEvaluator(examples), model)
    return Client("org", examples, evaluator, privacy=release, per_item_methods=True)


def _reply_bytes(client: Client, items: list[tuple[str, list[str]]], rid: str = "r") -> bytes:
    request = RewardRequest(rid, "org", [RewardItem(str(k), q, c) for k, (q, c) in enumerate(items)])
    return client.handle(encode(request))


def _bound(epsilon: float) -> float:
    return (math.exp(epsilon) - 1) / (math.exp(epsilon) + 1)


def _distance(a: list[float], b: list[float], bins: list[float]) -> tuple[float, float]:
    """Empirical total variation between two samples over ``bins`` (upper edges), and 4 sigma of it."""

    def histogram(values: list[float]) -> list[float]:
        counts = Counter(next(i for i, edge in enumerate(bins) if v <= edge) for v in values)
        return [counts[i] / len(values) for i in range(len(bins))]

    p, q = histogram(a), histogram(b)
    slack = sum(
        math.sqrt(x * (1 - x) / len(a)) + math.sqrt(y * (1 - y) / len(b)) for x, y in zip(p, q, strict=True)
    )
    return sum(abs(x - y) for x, y in zip(p, q, strict=True)) / 2, 4 * slack / 2


def test_a_one_item_reply_has_the_same_bytes_but_the_value_whoever_holds_the_question() -> None:
    (held,) = _sums(1)
    items = [(held.question, [f"<answer>{held.answer}</answer>"])]
    holder, stranger = _client([held], 1.0, seed=1), _client(_sums(5, offset=100), 1.0, seed=1)
    ours, theirs = _reply_bytes(holder, items), _reply_bytes(stranger, items)
    assert split(ours)[0] == split(theirs)[0] and len(ours) == len(theirs)  # header: counts, spend, shape
    a, b = decode(ours), decode(theirs)
    assert isinstance(a, RewardReply) and isinstance(b, RewardReply)
    assert a.methods == b.methods == {"answer": 0, "model": 0, "none": 1}
    assert a.items[0].method is b.items[0].method is None  # per-item methods never leave with privacy
    assert a.privacy_spent == b.privacy_spent  # every value sent counts, held or not
    assert holder.privacy is not None and stranger.privacy is not None
    assert holder.privacy.ledger.examples == {example_id(held.question): {charge_key("rr", 1.0): 1}}
    assert stranger.privacy.ledger.examples == {}  # free noise charges no example

    # hide_membership off (only to measure what hiding costs): the stranger abstains and says so
    shown = _client(_sums(5, offset=100), 1.0, seed=1)
    assert shown.privacy is not None
    shown.privacy.hide_membership = False
    reply = decode(_reply_bytes(shown, items))
    assert isinstance(reply, RewardReply) and reply.items[0].rewards == [None]
    assert reply.methods == {"answer": 0, "model": 0, "none": 1} and reply.items[0].method == "none"
    shown_holder = _client([held], 1.0, seed=1)
    assert shown_holder.privacy is not None
    shown_holder.privacy.hide_membership = False
    reply = decode(_reply_bytes(shown_holder, items))
    assert isinstance(reply, RewardReply) and reply.methods == {"answer": 1, "model": 0, "none": 0}
    assert reply.items[0].rewards[0] in (0.0, 1.0)  # its answer check, privatised as before
    assert shown.privacy.ledger.examples == {}


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_an_optimal_distinguisher_gains_no_more_than_epsilon_allows_between_holder_and_stranger(
    epsilon: float,
) -> None:
    examples = _sums(N)
    items = [(ex.question, [f"<answer>{ex.answer}</answer>"]) for ex in examples]
    holder = decode(_reply_bytes(_client(examples, epsilon, seed=2), items))
    stranger = decode(_reply_bytes(_client(_sums(10, offset=N), epsilon, seed=3), items))
    assert isinstance(holder, RewardReply) and isinstance(stranger, RewardReply)
    ours = [i.rewards[0] for i in holder.items]
    theirs = [i.rewards[0] for i in stranger.items]
    assert None not in ours + theirs
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))
    distance, slack = _distance(ours, theirs, [0.0, 1.0])
    assert abs(distance - (keep - 0.5)) <= slack  # the stranger's are a fair coin
    assert distance <= _bound(epsilon) + slack
    assert holder.methods == stranger.methods and holder.privacy_spent == stranger.privacy_spent


@pytest.mark.parametrize("scores", ["binary", "continuous"])
def test_a_client_with_a_model_answers_every_item_in_one_form_held_or_not(scores: str) -> None:
    """A holder's answer check and a stranger's model score are released by the same mechanism (a
    score's form, Laplace on [0, 1], for a likelihood model), so their distributions are as close."""
    epsilon = 1.0
    examples = _sums(N)
    items = [(ex.question, [f"<answer>{ex.answer}</answer>"]) for ex in examples]
    model = ConstantModel(0.5 if scores == "continuous" else 0.0)
    holder = decode(_reply_bytes(_client(examples, epsilon, 4, model, scores), items))
    stranger = decode(_reply_bytes(_client(_sums(10, offset=N), epsilon, 5, model, scores), items))
    assert isinstance(holder, RewardReply) and isinstance(stranger, RewardReply)
    ours = [i.rewards[0] for i in holder.items]
    theirs = [i.rewards[0] for i in stranger.items]
    assert holder.privacy_spent is not None
    if scores == "continuous":  # not bits: the holder's answer checks are scores too
        assert len(set(ours)) > 20 and len(set(theirs)) > 20
    else:
        assert set(ours) == set(theirs) == {0.0, 1.0}
    bins = [0.0, 0.25, 0.5, 0.75, 0.999, 1.0]
    distance, slack = _distance(ours, theirs, bins)
    assert distance <= _bound(epsilon) + slack
    assert holder.methods == stranger.methods and holder.privacy_spent == stranger.privacy_spent


def test_a_private_experts_training_privacy_is_composed_into_every_example_and_covers_the_model() -> None:
    class LaplaceTraining:  # stands for DP-SGD's PLD: any dp-accounting PLD on the grid asked for
        def pld(self, value_discretization_interval: float):
            from dp_accounting.pld import privacy_loss_distribution as pld

            return pld.from_laplace_mechanism(
                1.0, value_discretization_interval=value_discretization_interval
            )

        def values(self) -> dict[str, float]:
            return {"laplace": 1.0}

    examples = _sums(4)
    items = [(ex.question, [f"<answer>{ex.answer}</answer>"]) for ex in examples]
    items += [(f"What is {i} * 3?", ["<answer>3</answer>"]) for i in range(5)]  # not held: the model's
    plain = PrivateRelease(PrivacyPolicy(1.0, 8.0), seed=6)
    private = PrivateRelease(PrivacyPolicy(1.0, 8.0), seed=6, training=LaplaceTraining())
    for release in (plain, private):
        evaluator = DualEvaluator(AnswerEvaluator(examples), ConstantModel(1.0))
        _reply_bytes(Client("org", examples, evaluator, privacy=release), items)
    without, with_training = plain.report(), private.report()
    assert without["model_releases_uncovered"] == 5 and not without["training_privacy_composed"]
    assert with_training["model_releases_uncovered"] == 0 and with_training["training_privacy_composed"]
    assert without["per_example_epsilon_max"] == pytest.approx(1.0, abs=1e-2)
    assert with_training["per_example_epsilon_max"] == pytest.approx(2.0, abs=2e-2)  # 1 (train) + 1


@pytest.mark.slow  # builds the default preset's clients twice (about 10 s)
def test_the_membership_cost_bench_runs_and_only_a_private_client_answers_what_it_does_not_hold() -> None:
    """``python bench/hidden_membership.py`` (docs/trust.md), on a few questions."""
    bench = load_script("bench/hidden_membership.py")
    plain, private = bench.measure(None, 6), bench.measure(8.0, 6)
    assert plain["values_received"] == plain["holder_values"] == 6 * bench.G  # strangers abstain
    assert private["values_received"] == 5 * 6 * bench.G and private["holder_values"] == 6 * bench.G
    assert plain["holder_correct"] == 1.0 and private["released_correct"] < 0.8


def test_the_server_counts_a_private_clients_items_as_hidden_and_never_as_abstentions() -> None:
    from fedgrpo.data import Question
    from fedgrpo.selection.base import AllSelector
    from fedgrpo.server import FederatedAdvantage
    from fedgrpo.transport import InProcessTransport

    examples = _sums(4)
    plain = Client("plain", examples[:2])  # no privacy: abstains on the two it does not hold
    private = Client("private", examples[2:], privacy=PrivateRelease(PrivacyPolicy(1.0, 8.0), seed=8))
    advantage = FederatedAdvantage(InProcessTransport([plain, private]), AllSelector(), 2, 2)
    questions = [Question(ex.qid, ex.domain, ex.question) for ex in examples]
    advantage.advantages(
        questions, [[f"<answer>{ex.answer}</answer>", "<answer>x</answer>"] for ex in examples]
    )
    summary = advantage.total.summary()
    assert summary["fed/methods"] == {"answer": 2, "hidden": 4, "none": 2} and summary["fed/abstentions"] == 2
    assert summary["fed/rewards_received"] == 2 * 2 + 4 * 2  # the private client left no slot empty


def test_the_config_turns_hiding_off_only_when_asked() -> None:
    from fedgrpo.client.factory import private_release
    from fedgrpo.config import load_config

    for value, hidden in (("true", True), ("false", False)):
        over = ["clients.privacy.enabled=true", f"clients.privacy.hide_membership={value}"]
        cfg = load_config("smoke", over)
        release = private_release(cfg, cfg.clients.privacy, "client-0")
        assert release is not None and release.hide_membership is hidden
