"""The fleet's item knowledge as one engine reads it: records by item id, laid on rows.

A worker follows ``interest.items`` whole and hands each record to a
:class:`KnowledgeView`, which keeps the newest version per item id and writes it into the
row-keyed structures the ranking reads (:class:`~interest_core.cooccurrence.CoOccurrence`,
two :class:`~interest_core.trending.Trending`), replacing what they held for that item.
Neighbours the catalog does not (yet) hold are left out and put back by
:meth:`KnowledgeView.remap` once the catalog changes; a deleted item (a tombstone, or a
catalog deletion) disappears from every neighbour list at read time, whichever comes
first. An older version than the one held is ignored (stale); a record learned with other
decay half-lives than this engine's is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from interest_core.cooccurrence import CoOccurrence
from interest_core.item_knowledge import ItemKnowledge
from interest_core.trending import Trending

__all__ = ["KnowledgeView"]


class KnowledgeView:
    """Newest item knowledge per item id, materialised on catalog rows.

    ``row_of`` maps a live item id to its row (None for an item not in the catalog);
    ``cooccurrence``, ``trending`` and ``popularity`` are the structures the engine
    ranks from; this view becomes their only writer.
    """

    def __init__(
        self,
        row_of: Callable[[str], int | None],
        cooccurrence: CoOccurrence,
        trending: Trending,
        popularity: Trending,
    ) -> None:
        self.row_of = row_of
        self.cooccurrence = cooccurrence
        self.trending = trending
        self.popularity = popularity
        self.records: dict[str, ItemKnowledge] = {}
        #: Records ignored, by reason (``stale_version``, ``half_life_mismatch``).
        self.refused: dict[str, int] = {}
        #: Newest ``ingested_at`` of any record applied (unix seconds).
        self.newest_ingested_at = 0.0

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return False

    def apply(self, record: ItemKnowledge) -> bool:
        """Take one record; False when it was ignored (stale or mismatched)."""
        held = self.records.get(record.item_id)
        if held is not None and record.version < held.version:
            return self._refuse("stale_version")
        if (
            record.trending.half_life_s != self.trending.half_life_s
            or record.popularity.half_life_s != self.popularity.half_life_s
        ):
            return self._refuse("half_life_mismatch")
        self.records[record.item_id] = record
        self.newest_ingested_at = max(self.newest_ingested_at, record.ingested_at)
        self._materialise(record)
        return True

    def _materialise(self, record: ItemKnowledge) -> None:
        row = self.row_of(record.item_id)
        if row is None:
            return
        rows: list[int] = []
        counts: list[float] = []
        row_of = self.row_of
        for other, count in record.neighbours.items():
            other_row = row_of(other)
            if other_row is not None and other_row != row:
                rows.append(other_row)
                counts.append(count)
        self.cooccurrence.set_item(
            row,
            record.count,
            np.asarray(rows, dtype=np.int64),
            np.asarray(counts, dtype=np.float64),
        )
        for trend, decayed in (
            (self.trending, record.trending),
            (self.popularity, record.popularity),
        ):
            if decayed.ts is not None:
                trend.set(row, decayed.value, decayed.ts)
            else:
                trend.remove(row)

    def remove(self, item_id: str, row: int | None = None) -> None:
        """The item is deleted (tombstone on ``interest.items`` or a catalog deletion):
        forget its record and everything held on its ``row`` (when given or known)."""
        self.records.pop(item_id, None)
        row = self.row_of(item_id) if row is None else row
        if row is not None:
            self.cooccurrence.remove(row)
            self.trending.remove(row)
            self.popularity.remove(row)

    def remap(self, item_ids: Iterable[str] | None = None) -> None:
        """Write the held records again after the catalog changed (new rows appeared):
        those of ``item_ids`` and every record naming one of them, or all (None)."""
        if item_ids is None:
            for record in self.records.values():
                self._materialise(record)
            return
        wanted = set(item_ids)
        for record in self.records.values():
            if record.item_id in wanted or not wanted.isdisjoint(record.neighbours):
                self._materialise(record)

    def __len__(self) -> int:
        return len(self.records)
