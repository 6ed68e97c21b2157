"""What the engine learns about items from every user's events (not about one user).

:class:`ItemKnowledge` holds item-to-item co-occurrence, short-horizon trending and
long-horizon popularity, all indexed by catalog row. The engine writes to it through
:meth:`ItemKnowledge.observe` (one positive item event) and :meth:`ItemKnowledge.remove`
(deleted items); the candidate sources (:mod:`interest_core.candidates`) only read it.
One object, injected into the engine, so a shared implementation can replace it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from interest_core.cooccurrence import CoOccurrence
from interest_core.trending import Trending

__all__ = ["PAIR_DECAY_PER_ITEM", "ItemKnowledge"]

# A new positive item pairs with the i-th newest history item with weight 0.85**i: items
# consumed close together in a user's sequence are stronger evidence of relatedness
# (session-kNN style position decay); the same recency scale as the user's history
# weights in the candidate sources, not tuned.
PAIR_DECAY_PER_ITEM = 0.85


class ItemKnowledge:
    """Co-occurrence, trending and popularity counts by catalog row.

    ``trending_half_life_s`` and ``popularity_half_life_s`` (seconds of event time) set
    how fast the two counts forget; ``learn_pairs`` / ``learn_popularity`` switch the
    co-occurrence and popularity updates off for strategies that do not read them;
    ``background_pairs`` applies the co-occurrence updates on a thread of their own
    (:class:`~interest_core.cooccurrence.CoOccurrence`'s ``background``).
    """

    def __init__(
        self,
        trending_half_life_s: float,
        popularity_half_life_s: float,
        *,
        learn_pairs: bool = True,
        learn_popularity: bool = True,
        background_pairs: bool = False,
    ) -> None:
        self.cooccurrence = CoOccurrence(background=background_pairs)
        self.trending = Trending(trending_half_life_s)
        self.popularity = Trending(popularity_half_life_s)
        self.learn_pairs = learn_pairs
        self.learn_popularity = learn_popularity

    def observe(self, row: int, weight: float, ts: float, history: Sequence[int]) -> None:
        """A user acted positively (``weight`` > 0) on ``row`` at event time ``ts``
        (seconds); ``history`` is the user's earlier positive rows, newest first."""
        if self.learn_pairs:
            self.cooccurrence.add(row, history, decay=PAIR_DECAY_PER_ITEM)
        self.trending.add(row, weight, ts)
        if self.learn_popularity:
            self.popularity.add(row, weight, ts)

    def remove(self, rows: Iterable[int]) -> None:
        """Forget deleted items' rows everywhere."""
        for row in rows:
            self.cooccurrence.remove(row)
            self.trending.remove(row)
            self.popularity.remove(row)
