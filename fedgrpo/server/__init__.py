"""The server's side of the federation: one exchange with checks and byte counts (``exchange``), the
reward round that turns expert rewards into advantages (``rewards``), the competence queries that
build the confidence graph (``competence``), and what rounds cost (``stats``)."""

from fedgrpo.server.competence import build_confidence_graph, expert_agreement
from fedgrpo.server.exchange import Exchanged, send
from fedgrpo.server.rewards import FederatedAdvantage, GroupRecord
from fedgrpo.server.stats import RoundStats

__all__ = [
    "Exchanged",
    "FederatedAdvantage",
    "GroupRecord",
    "RoundStats",
    "build_confidence_graph",
    "expert_agreement",
    "send",
]
