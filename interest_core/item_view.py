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

Read your own writes: the engine applies its own events to these structures at once (a
preview of what the aggregation will publish) and journals their signals here
(:meth:`KnowledgeView.own`). A record replaces an item's row with the fleet's knowledge
as of its watermarks, then the journalled signals the record does not cover yet (offset
above its watermark for their partition) are applied again on top, and the covered ones
are forgotten. So a worker always sees the fleet's knowledge plus its own newer events:
one worker alone sees exactly what a single process computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

import numpy as np

from interest_core.cooccurrence import CoOccurrence
from interest_core.item_knowledge import ItemRecord
from interest_core.item_signals import ItemSignal
from interest_core.signal_journal import Entry, SignalJournal
from interest_core.trending import Trending

__all__ = ["KnowledgeView", "Laid"]

#: A record laid on catalog rows: (row, neighbour rows, pair counts).
Laid = tuple[int, np.ndarray, np.ndarray]

#: Journal entries kept at most, one per item an own signal touches (oldest forgotten
#: first: the records bring them back).
DEFAULT_MAX_JOURNAL = 500_000


class KnowledgeView:
    """Newest item knowledge per item id, materialised on catalog rows.

    ``row_of`` maps every live item id to its row (the catalog's own mapping, read as it
    changes);
    ``cooccurrence``, ``trending`` and ``popularity`` are the structures the engine
    ranks from; this view becomes their only writer.
    """

    def __init__(
        self,
        row_of: Mapping[str, int],
        cooccurrence: CoOccurrence,
        trending: Trending,
        popularity: Trending,
        *,
        max_journal: int = DEFAULT_MAX_JOURNAL,
    ) -> None:
        self.row_of = row_of
        self.cooccurrence = cooccurrence
        self.trending = trending
        self.popularity = popularity
        self.records: dict[str, ItemRecord] = {}
        #: Records ignored, by reason (``stale_version``, ``half_life_mismatch``).
        self.refused: dict[str, int] = {}
        #: Newest ``ingested_at`` of any record applied (unix seconds).
        self.newest_ingested_at = 0.0
        self.journal = SignalJournal(row_of, max_journal)

    def own(
        self,
        signals: Sequence[ItemSignal],
        own_rows: Sequence[int] | None = None,
        pair_rows: Sequence[int] | None = None,
    ) -> None:
        """Journal the own-item signals of this engine's positive events (already applied
        to the rows), under their items and their pairs' partners (a partner's signal is
        read from its item's on replay, see
        :func:`~interest_core.item_signals.partner_signals`); ``own_rows`` and
        ``pair_rows``: their rows, when known (see :meth:`SignalJournal.add`)."""
        self.journal.add(signals, own_rows, pair_rows)

    @property
    def journalled(self) -> int:
        """Journal entries not yet covered by a record (one per item a signal touches)."""
        return len(self.journal)

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return False

    def apply(self, record: ItemRecord, laid: Laid | None = None) -> bool:
        """Take one record; False when it was ignored (stale or mismatched). ``laid`` is
        :meth:`lay` of the record by a view with the same rows (saves the id lookups when
        several engines share one catalog layout)."""
        return self.apply_many([record], None if laid is None else [laid]) == 1

    def apply_many(
        self, records: Sequence[ItemRecord], laid: Sequence[Laid | None] | None = None
    ) -> int:
        """:meth:`apply` for each record in order (the journal read once); how many were
        applied."""
        rows = [self.row_of.get(record.item_id) for record in records]
        found = self.journal.find([row for row in rows if row is not None])
        applied = 0
        for i, (record, row) in enumerate(zip(records, rows, strict=True)):
            held = self.records.get(record.item_id)
            if held is not None and record.version < held.version:
                self._refuse("stale_version")
                continue
            if (
                record.trending.half_life_s != self.trending.half_life_s
                or record.popularity.half_life_s != self.popularity.half_life_s
            ):
                self._refuse("half_life_mismatch")
                continue
            self.records[record.item_id] = record
            self.newest_ingested_at = max(self.newest_ingested_at, record.ingested_at)
            entries = found.get(row, []) if row is not None else []
            if entries:
                self.journal.kill(self.journal.covered(entries, record.watermarks))
            self._materialise(record, None if laid is None else laid[i], entries)
            applied += 1
        return applied

    def lay(self, record: ItemRecord) -> Laid | None:
        """``(row, neighbour rows, pair counts)`` of a record on this view's rows (None when
        the catalog does not hold the item); neighbours it does not hold are left out."""
        row = self.row_of.get(record.item_id)
        if row is None:
            return None
        neighbours = record.neighbours
        n = len(neighbours)
        # C-level lookups: this runs for every record on every worker.
        rows = np.fromiter(map(self.row_of.get, neighbours, repeat(-1)), np.int64, count=n)
        counts = np.fromiter(neighbours.values(), np.float64, count=n)
        keep = (rows >= 0) & (rows != row)
        if not keep.all():
            rows, counts = rows[keep], counts[keep]
        return row, rows, counts

    def _materialise(
        self, record: ItemRecord, laid: Laid | None = None, entries: Sequence[Entry] = ()
    ) -> None:
        """Write ``record`` on its row, then the live journal ``entries`` of its row."""
        if laid is None:
            laid = self.lay(record)
        if laid is None:
            return
        row, rows, counts = laid
        self.cooccurrence.set_item(row, record.count, rows, counts)
        for trend, decayed in (
            (self.trending, record.trending),
            (self.popularity, record.popularity),
        ):
            if decayed.ts is not None:
                trend.set(row, decayed.value, decayed.ts)
            else:
                trend.remove(row)
        # A partner's entries are one pair each, no count: consecutive ones go in one
        # call that leaves the table as one call each would (an 8-worker `interest eval`
        # of 200 users of MovieLens' first half made 1.7 million single-pair calls: 44-46
        # s in all before, 39 s after; docs/RESULTS.md, round 18).
        partners: list[int] = []
        amounts: list[float] = []
        row_of = self.row_of.get
        for sig, pair, chunk, index in entries:
            if not chunk.alive[index]:  # covered meanwhile
                continue
            signal = chunk.signals[sig]  # (made here, if kept as rows)
            if pair >= 0:  # the row is a partner's: one pair, no count
                other_row = row_of(signal.item_id)
                amount = signal.pairs[pair][1]
                if other_row is not None and other_row != row and amount > 0.0:
                    partners.append(other_row)
                    amounts.append(amount)
                continue
            if partners:
                self.cooccurrence.add_one_side(row, 0.0, partners, amounts, pair_by_pair=True)
                partners, amounts = [], []
            self._replay(row, signal)
        if partners:
            self.cooccurrence.add_one_side(row, 0.0, partners, amounts, pair_by_pair=True)

    def _replay(self, row: int, signal: ItemSignal) -> None:
        """Apply one journalled own-event signal to its own item's ``row`` on top of a
        record, all of it, as the engine first applied it."""
        others: list[int] = []
        amounts: list[float] = []
        for other, amount in signal.pairs:
            other_row = self.row_of.get(other)
            if other_row is not None and other_row != row:
                others.append(other_row)
                amounts.append(amount)
        self.cooccurrence.add_one_side(row, signal.count, others, amounts)
        if signal.weight:
            self.trending.add(row, signal.weight, signal.ts)
            self.popularity.add(row, signal.weight, signal.ts)

    def remove(self, item_id: str, row: int | None = None) -> None:
        """The item is deleted (tombstone on ``interest.items`` or a catalog deletion):
        forget its record and everything held on its ``row`` (when given or known)."""
        self.remove_many([item_id], None if row is None else [row])

    def remove_many(
        self, item_ids: Sequence[str], rows: Sequence[int | None] | None = None
    ) -> None:
        """:meth:`remove` for each item (the journal read once)."""
        if rows is None:
            rows = [self.row_of.get(item_id) for item_id in item_ids]
        held = [row for row in rows if row is not None]
        found = self.journal.find(held)
        self.journal.kill([entry for row in held for entry in found.get(row, [])])
        for item_id in item_ids:
            self.records.pop(item_id, None)
        for row in held:
            self.cooccurrence.remove(row)
            self.trending.remove(row)
            self.popularity.remove(row)

    def remap(self, item_ids: Iterable[str] | None = None) -> None:
        """Write the held records again after the catalog changed (new rows appeared):
        those of ``item_ids`` and every record naming one of them, or all (None)."""
        records = list(self.records.values())
        if item_ids is not None:
            wanted = set(item_ids)
            records = [
                record
                for record in records
                if record.item_id in wanted or not wanted.isdisjoint(record.neighbours)
            ]
        rows = [self.row_of.get(record.item_id) for record in records]
        found = self.journal.find([row for row in rows if row is not None])
        for record, row in zip(records, rows, strict=True):
            self._materialise(record, None, found.get(row, []) if row is not None else [])

    def __len__(self) -> int:
        return len(self.records)
