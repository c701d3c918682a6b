"""What reward rounds cost and produced: the numbers behind every ``fed/`` metric.

Every number that leaves here is finite or None (:func:`finite`): ``metrics.jsonl`` is strict JSON,
and a sum that overflowed must show up as a missing value, not stop the run.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fedgrpo.server.exchange import Exchanged

log = logging.getLogger(__name__)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts and lists too) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def note_privacy_spent(
    spent: dict[str, tuple[float, float]], client: str, reported: tuple[float, float] | None
) -> None:
    """Keep a client's reported cumulative privacy spend (the protocol checked it is finite). A spend
    that goes down is logged and ignored: a client's loss over a run only grows."""
    if reported is None:
        return
    before = spent.get(client)
    if before is not None and reported[0] < before[0]:
        log.warning(
            "%s reported a privacy spend of %.4g after %.4g; kept the larger",
            client,
            *reported[:1],
            before[0],
        )
        return
    spent[client] = reported


def _sqrt(value: float) -> float:
    return math.sqrt(value) if value >= 0 else math.nan  # NaN (then None), never a ValueError


# The round numbers about bytes: what every method that moves something reports the same way
# (the baselines' results keep these from a RoundStats summary; the rest are reward rounds').
TRANSFER_KEYS = (
    "fed/rounds",
    "fed/bytes_down",
    "fed/bytes_up",
    "fed/bytes_down_per_round",
    "fed/bytes_up_per_round",
    "fed/bytes_down_per_client",
    "fed/bytes_up_per_client",
    "fed/seconds",
)


@dataclass
class RoundStats:
    """What one or more reward rounds cost and produced; drained into the per-step metrics."""

    rounds: int = 0
    questions: int = 0
    candidates: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    bytes_down_per_client: Counter = field(default_factory=Counter)
    bytes_up_per_client: Counter = field(default_factory=Counter)
    rewards_received: int = 0
    rewards_missing: int = 0
    abstentions: int = 0
    methods: Counter = field(default_factory=Counter)  # items per method, as accepted replies count them
    groups_scored: int = 0
    groups_zero_spread: int = 0
    reward_sum: float = 0.0
    advantage_sq_sum: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    routed: Counter = field(default_factory=Counter)  # client -> questions routed to it
    replacements: int = 0
    online_updates: int = 0
    timed_out: Counter = field(default_factory=Counter)  # client -> requests it did not answer in time
    canaries: int = 0  # canary questions among the round's (fedgrpo.server.canaries)
    canaries_asked: Counter = field(default_factory=Counter)  # client -> canaries it was asked
    canary_rewards: int = 0  # canary rewards checked against the server's answers
    excluded: Counter = field(default_factory=Counter)  # client -> 1 in the round it was excluded

    def merge(self, other: RoundStats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update(value)
            else:
                setattr(self, name, mine + value)

    def summary(self) -> dict[str, Any]:
        scored = max(self.rewards_received, 1)
        return finite(self._summary(scored))

    def _summary(self, scored: int) -> dict[str, Any]:
        return {
            "fed/rounds": self.rounds,
            "fed/questions": self.questions,
            "fed/reward_mean": self.reward_sum / scored if self.rewards_received else None,
            "fed/advantage_std": _sqrt(self.advantage_sq_sum / max(self.candidates, 1)),
            "fed/groups_scored": self.groups_scored,
            "fed/zero_spread_share": self.groups_zero_spread / max(self.groups_scored, 1),
            "fed/unscored_share": 1 - self.groups_scored / max(self.questions, 1),
            "fed/rewards_received": self.rewards_received,
            "fed/rewards_missing": self.rewards_missing,
            "fed/abstentions": self.abstentions,
            "fed/methods": dict(sorted(self.methods.items())),
            "fed/bytes_down": self.bytes_down,
            "fed/bytes_up": self.bytes_up,
            "fed/bytes_down_per_round": round(self.bytes_down / max(self.rounds, 1)),
            "fed/bytes_up_per_round": round(self.bytes_up / max(self.rounds, 1)),
            "fed/bytes_down_per_client": dict(sorted(self.bytes_down_per_client.items())),
            "fed/bytes_up_per_client": dict(sorted(self.bytes_up_per_client.items())),
            "fed/rejected": dict(sorted(self.rejected.items())),
            "fed/rejected_total": sum(self.rejected.values()),
            "fed/seconds": round(self.seconds, 3),
            "fed/routed": dict(sorted(self.routed.items())),
            "fed/replacements": self.replacements,
            "fed/online_updates": self.online_updates,
            "fed/timed_out": dict(sorted(self.timed_out.items())),
            "fed/canaries": self.canaries,
            "fed/canaries_asked": dict(sorted(self.canaries_asked.items())),
            "fed/canary_rewards": self.canary_rewards,
            "fed/excluded": sorted(self.excluded),
        }

    def record(self, exchanged: Exchanged) -> None:
        """Count one exchange's bytes (per client too), its rejections by reason and its timeouts."""
        self.bytes_down += sum(exchanged.bytes_down.values())
        self.bytes_up += sum(exchanged.bytes_up.values())
        self.bytes_down_per_client.update(exchanged.bytes_down)
        self.bytes_up_per_client.update(exchanged.bytes_up)
        for client, rejection in exchanged.rejected.items():
            self.rejected[rejection.reason] += 1
            if rejection.reason == "timeout":
                self.timed_out[client] += 1

    def to_json(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundStats:
        stats = cls()
        for k, v in data.items():
            if hasattr(stats, k):
                setattr(stats, k, Counter(v) if isinstance(getattr(stats, k), Counter) else v)
        return stats
