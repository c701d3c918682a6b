"""A byte per reward (fedgrpo.protocol): exact where answers score, within half a grid step elsewhere,
and whatever the grid cannot hold still rejected by the server."""

from __future__ import annotations

import math

import pytest

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
from tests.wire import split

COUNTS = {"answer": 1, "model": 0, "none": 0}


def _round_trip(rewards: list[float | None], bonus: float) -> list[float | None]:
    reply = decode(encode(RewardReply("r", "c", [ItemScores("0", rewards)], COUNTS, bonus=bonus)))
    assert isinstance(reply, RewardReply) and reply.bonus == bonus
    return reply.items[0].rewards


@pytest.mark.parametrize("bonus", [0.0, 0.1, 0.05, 0.2, 0.37, 1.0, 2.5])
def test_answer_based_rewards_are_exact_for_any_format_reward(bonus: float) -> None:
    sent = [0.0, 1.0, 0.0 + bonus, 1.0 + bonus, None]  # reward_for: correctness + bonus when well tagged
    assert _round_trip(sent, bonus) == sent


def test_model_scores_come_back_within_half_a_step() -> None:
    scores = [k / 1000 for k in range(1001)]
    for bonus in (0.0, 0.1):
        sent = [s + bonus for s in scores] + scores
        back = _round_trip(sent, bonus)
        worst = max(abs(b - s) for b, s in zip(back, sent, strict=True))  # type: ignore[operator]
        assert worst <= 0.5 / 126 + 1e-12 and worst > 0  # a real quantisation, bounded by 1/252
    assert [unpack_reward(pack_reward(k / 126, 0.1), 0.1) for k in range(127)] == [
        k / 126 for k in range(127)
    ]


def test_a_byte_per_reward_whatever_the_values() -> None:
    items = [ItemScores(str(k), [(k * 7 + j) % 11 / 10 for j in range(8)]) for k in range(100)]
    payload = encode(RewardReply("r", "c", items, {"answer": 100, "model": 0, "none": 0}, bonus=0.1))
    header, body = split(payload)
    assert len(body) == 800 and header["shape"] == [[8, 100]]
    assert len(payload) <= 800 + 120  # the fixed header is all the rest (less where zlib pays)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.2, 1.2, 5.0, 10**400])
def test_what_the_grid_cannot_hold_crosses_as_nan_and_is_rejected(bad: float) -> None:
    back = _round_trip([1.0, bad], 0.1)  # type: ignore[list-item]
    assert back[0] == 1.0 and back[1] is not None and math.isnan(back[1])
    with pytest.raises(Rejected) as err:
        check_reward_item(ItemScores("0", back), 2, set(), 1.1)
    assert err.value.reason == "non_finite"


def test_a_bonus_beyond_the_servers_format_reward_is_out_of_range() -> None:
    back = _round_trip([1.0 + 0.5], 0.5)  # a client on another format reward than the server's 0.1
    with pytest.raises(Rejected) as err:
        check_reward_item(ItemScores("0", back), 1, set(), 1.1)
    assert err.value.reason == "out_of_range"
