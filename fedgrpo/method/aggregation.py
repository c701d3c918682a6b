"""The names of the ways to combine experts' rewards, torch-free so the config can check them.

The rules themselves are in :mod:`fedgrpo.method.objective`. ``median`` and ``trimmed-mean`` are the robust
ones: they outvote one lying expert only where at least ``MIN_ROBUST_EXPERTS`` experts score a
candidate (two honest against one liar), so a config must ask for that many experts per question.
"""

from __future__ import annotations

from typing import Literal, get_args

Aggregation = Literal["mean", "pooled", "median", "trimmed-mean"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
ROBUST_AGGREGATIONS: tuple[Aggregation, ...] = ("median", "trimmed-mean")
MIN_ROBUST_EXPERTS = 3
