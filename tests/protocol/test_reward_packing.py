"""A byte per reward (fedgrpo.protocol): exact where answers score, within half a grid step elsewhere,
whatever the grid cannot hold still rejected by the server; and the format reward, now added by the
server, gives the very rewards a client that added it itself (protocol 3) gave."""

from __future__ import annotations

import math

import pytest

from fedgrpo.client import AnswerEvaluator, Client, Evaluation
from fedgrpo.client.agreement import agreement_rewards
from fedgrpo.data import Question, generate
from fedgrpo.method.answers import reward_for
from fedgrpo.protocol import (
    ItemScores,
    Rejected,
    RewardReply,
    check_reward_item,
    decode,
    encode,
    pack_reward,
    unpack_reward,
)
from fedgrpo.selection import AllSelector
from fedgrpo.server import FederatedAdvantage
from fedgrpo.transport import InProcessTransport
from tests.wire import split

COUNTS = {"answer": 1, "model": 0, "none": 0}


def _round_trip(rewards: list[float | None]) -> list[float | None]:
    reply = decode(encode(RewardReply("r", "c", [ItemScores("0", rewards)], COUNTS)), client="c")
    assert isinstance(reply, RewardReply) and reply.client == "c"
    return reply.items[0].rewards


def test_answer_based_rewards_are_exact() -> None:
    assert _round_trip([0.0, 1.0, None]) == [0.0, 1.0, None]


def test_model_scores_come_back_within_half_a_step() -> None:
    sent = [k / 1000 for k in range(1001)]
    back = _round_trip(sent)  # type: ignore[arg-type]
    worst = max(abs(b - s) for b, s in zip(back, sent, strict=True))  # type: ignore[operator]
    assert worst <= 0.5 / 126 + 1e-12 and worst > 0  # a real quantisation, bounded by 1/252
    assert [unpack_reward(pack_reward(k / 126)) for k in range(127)] == [k / 126 for k in range(127)]


def test_a_byte_per_reward_whatever_the_values() -> None:
    items = [ItemScores(str(k), [(k * 7 + j) % 11 / 10 for j in range(8)]) for k in range(100)]
    payload = encode(RewardReply("r", "c", items, {"answer": 100, "model": 0, "none": 0}))
    header, body = split(payload)
    assert len(body) == 800 and header["shape"] == [[8, 100]]
    assert len(payload) <= 800 + 8  # the header is all the rest (less where zlib pays)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.2, 1.2, 5.0, 10**400])
def test_what_the_grid_cannot_hold_crosses_as_nan_and_is_rejected(bad: float) -> None:
    back = _round_trip([1.0, bad])  # type: ignore[list-item]
    assert back[0] == 1.0 and back[1] is not None and math.isnan(back[1])
    with pytest.raises(Rejected) as err:
        check_reward_item(ItemScores("0", back), 2, set())
    assert err.value.reason == "non_finite"


class _Scores:
    """A client model's fixed scores (agreement bits, or likelihoods in [0, 1]), method "model"."""

    def __init__(self, scores: list[float | None]) -> None:
        self.scores = scores

    def evaluate(self, question: str, candidates: list[str]) -> Evaluation:
        return Evaluation(list(self.scores), "model")


CANDIDATES = ["<answer>3</answer>", "3", "so <answer>4</answer>", "<answer>x", "", "<answer>7</answer>"]


def _server_rewards(client: Client, question: Question, candidates: list[str], fmt: float) -> list[float]:
    server = FederatedAdvantage(
        InProcessTransport([client]), AllSelector(), 1, len(candidates), format_reward=fmt
    )
    server.advantages([question], [candidates])
    return server.last_rewards[0][0].tolist()


@pytest.mark.parametrize("fmt", [0.1, 0.0, 0.37])
def test_the_server_ends_with_the_reward_a_protocol_3_client_sent(fmt: float) -> None:
    """Protocol 3: the client sent ``reward_for(c, text, fmt)`` and, for an answer check or an agreement
    bit, the server read exactly that (0, 1, fmt and 1 + fmt were exact on its grid). Now the client
    sends ``c`` and the server adds ``fmt`` to well-formed candidates: bit for bit the same number."""
    sums = generate("sums_1digit", 2, seed=3)
    question = Question(sums[0].qid, sums[0].domain, sums[0].question)
    answer_cands = [f"<answer>{sums[0].answer}</answer>", *CANDIDATES]
    held = AnswerEvaluator(sums).evaluate(sums[0].question, answer_cands).rewards
    got = _server_rewards(Client("org", sums), question, answer_cands, fmt)
    assert got == [reward_for(c, t, fmt) for c, t in zip(held, answer_cands, strict=True)]  # type: ignore[arg-type]
    bits = agreement_rewards("3", CANDIDATES)
    got = _server_rewards(Client("org", [], _Scores(bits)), question, CANDIDATES, fmt)
    assert got == [reward_for(c, t, fmt) for c, t in zip(bits, CANDIDATES, strict=True)]  # type: ignore[arg-type]
    scores: list[float | None] = [0.0, 1.0, 0.31, 0.5, 2 / 3, 1 / 3]  # likelihoods: within half a step
    got = _server_rewards(Client("org", [], _Scores(scores)), question, CANDIDATES, fmt)
    old = [reward_for(c, t, fmt) for c, t in zip(scores, CANDIDATES, strict=True)]  # type: ignore[arg-type]
    assert all(abs(a - b) <= 0.5 / 126 + 1e-12 for a, b in zip(got, old, strict=True))
