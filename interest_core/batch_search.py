"""Recommendations for many users at once: one batched content search, then ranking.

The engine's ``process`` and ``recommend`` both end here: each user's view (state and
the items to leave out), one content search for all of them, the other candidate
sources, then the ranker per user.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from interest_core.candidates import Candidates
from interest_core.interest import UserState
from interest_core.ranking import Ranker
from interest_core.records import RecommendedItem

__all__ = ["BatchSearch"]


class BatchSearch:
    """Ranks ``candidates`` with ``ranker`` for the users of ``users`` (the live user
    registry, read per call; unknown users get the cold-start list)."""

    def __init__(
        self, users: Mapping[str, UserState], candidates: Candidates, ranker: Ranker
    ) -> None:
        self.users = users
        self.candidates = candidates
        self.ranker = ranker

    def recommend(
        self,
        user_ids: list[str],
        k: int,
        exclude_seen: bool,
        exclude: Mapping[str, Collection[str]] | None,
        timings: dict[str, float],
    ) -> dict[str, list[RecommendedItem]]:
        """Views, one batched content search, the other sources, then rank per user;
        ``timings`` receives ``search_s`` and ``rank_s`` (seconds)."""
        if not user_ids or k <= 0:
            return {u: [] for u in user_ids}
        t0 = time.perf_counter()
        views = []
        for user_id in user_ids:
            state = self.users.get(user_id)
            seen_by = state if exclude_seen else None
            ids = exclude.get(user_id, ()) if exclude is not None else ()
            excluded = len(ids) + (len(seen_by.seen) if seen_by is not None else 0)
            blocked = self.candidates.blocked(ids, seen_by)
            views.append(self.candidates.view(state, blocked, excluded))
        content = self.candidates.content.candidates(views)
        t1 = time.perf_counter()
        united, fills, trend = self.candidates.gather(views, k, content)
        out = {
            user_id: self.ranker.rank(user_id, view, rows, k, fill, trend)
            for user_id, view, rows, fill in zip(user_ids, views, united, fills, strict=True)
        }
        timings["search_s"] = t1 - t0
        timings["rank_s"] = time.perf_counter() - t1
        return out
