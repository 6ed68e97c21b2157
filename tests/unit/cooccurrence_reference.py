"""The plain Python co-occurrence table that :mod:`interest_core.cooccurrence` compiled:
a dict of neighbour slots per item, one update per pair in the interpreter. Kept as the
reference the compiled table is held to (``test_core_cooccurrence.py``); not used by the
engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ReferenceCoOccurrence"]

_EMPTY_ROWS = np.empty(0, dtype=np.int64)
_EMPTY_SIMS = np.empty(0, dtype=np.float64)


class _Neighbours:
    """One item's neighbour rows and pair counts (first ``size`` entries are live)."""

    __slots__ = ("_slot", "counts", "rows", "size")

    def __init__(self, capacity: int = 8) -> None:
        self._slot: dict[int, int] | None = {}
        self.rows = np.empty(capacity, dtype=np.int64)
        self.counts = np.empty(capacity, dtype=np.float64)
        self.size = 0

    @classmethod
    def of(cls, rows: np.ndarray, counts: np.ndarray) -> _Neighbours:
        """Entries set wholesale; the slot map is built on the first write."""
        entry = cls.__new__(cls)
        entry.rows = np.array(rows, dtype=np.int64)
        entry.counts = np.array(counts, dtype=np.float64)
        entry.size = len(entry.rows)
        entry._slot = None
        return entry

    @property
    def slot(self) -> dict[int, int]:
        """Neighbour row -> its index in ``rows`` (built lazily for wholesale entries)."""
        if self._slot is None:
            self._slot = dict(zip(self.rows[: self.size].tolist(), range(self.size), strict=True))
        return self._slot

    @slot.setter
    def slot(self, value: dict[int, int]) -> None:
        self._slot = value

    def bump(self, other: int, amount: float = 1.0) -> None:
        i = self.slot.get(other)
        if i is None:
            i = self.size
            if i == len(self.rows):
                self.rows = np.concatenate([self.rows, np.empty(i, dtype=np.int64)])
                self.counts = np.concatenate([self.counts, np.empty(i, dtype=np.float64)])
            self.slot[other] = i
            self.rows[i] = other
            self.counts[i] = amount
            self.size = i + 1
        else:
            self.counts[i] += amount

    def drop(self, other: int) -> None:
        i = self.slot.pop(other, None)
        if i is None:
            return
        last = self.size - 1
        if i != last:
            moved = int(self.rows[last])
            self.rows[i] = moved
            self.counts[i] = self.counts[last]
            self.slot[moved] = i
        self.size = last

    def keep_strongest(self, n: int) -> None:
        rows, counts = self.rows[: self.size], self.counts[: self.size]
        order = np.lexsort((rows, -counts))[:n]
        self.rows = np.concatenate([rows[order], np.empty(len(order), dtype=np.int64)])
        self.counts = np.concatenate([counts[order], np.empty(len(order), dtype=np.float64)])
        self.size = len(order)
        self.slot = {int(r): i for i, r in enumerate(self.rows[: self.size].tolist())}


class ReferenceCoOccurrence:
    """Bounded, online item-item co-occurrence counts keyed by item row."""

    def __init__(self, max_neighbours: int = 200) -> None:
        self.max_neighbours = max_neighbours
        self._items: dict[int, _Neighbours] = {}
        self.counts = np.zeros(1024, dtype=np.float64)  # n_i: positive events per item

    def _grow(self, row: int) -> None:
        if row >= len(self.counts):
            grown = np.zeros(max(row + 1, 2 * len(self.counts)), dtype=np.float64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def _entry(self, row: int) -> _Neighbours:
        entry = self._items.get(row)
        if entry is None:
            entry = self._items[row] = _Neighbours()
        return entry

    def add(self, row: int, history: Sequence[int], *, decay: float = 1.0) -> None:
        """Record a positive event on ``row`` after the user's positive ``history`` rows,
        newest first: the pair with the ``i``-th newest counts ``decay ** i`` (1.0 each
        when ``decay`` is 1), so items consumed close together count most."""
        self._grow(row)
        self.counts[row] += 1.0
        mine = self._entry(row)
        limit = 2 * self.max_neighbours
        items = self._items
        slot = mine.slot
        amount = 1.0
        done: set[int] = {row}
        for other in history:
            if other in done:
                continue
            done.add(other)
            i = slot.get(other)
            if i is None:
                mine.bump(other, amount)
            else:
                mine.counts[i] += amount
            theirs = items.get(other)
            if theirs is None:
                theirs = items[other] = _Neighbours()
            i = theirs.slot.get(row)
            if i is None:
                theirs.bump(row, amount)
                if theirs.size > limit:
                    theirs.keep_strongest(self.max_neighbours)
            else:
                theirs.counts[i] += amount
            amount *= decay
        if mine.size > limit:
            mine.keep_strongest(self.max_neighbours)

    def add_one_side(
        self, row: int, count: float, others: Sequence[int], amounts: Sequence[float]
    ) -> None:
        """Add ``count`` to ``n_row`` and ``amounts`` to ``row``'s pairs with ``others``,
        on ``row``'s side only (one item's share of :meth:`add`, as the item-keyed stage
        splits it); prunes as :meth:`add` does."""
        self._grow(row)
        self.counts[row] += count
        if not len(others):
            return
        mine = self._entry(row)
        for other, amount in zip(others, amounts, strict=True):
            mine.bump(other, amount)
        if mine.size > 2 * self.max_neighbours:
            mine.keep_strongest(self.max_neighbours)

    def set_item(self, row: int, count: float, rows: np.ndarray, counts: np.ndarray) -> None:
        """Replace ``row``'s count ``n_i`` and its neighbour pair counts wholesale (the
        item knowledge shared by the fleet, see :mod:`interest_core.item_knowledge`);
        ``rows`` must be distinct and not ``row``."""
        self._grow(row)
        self.counts[row] = count
        if not len(rows):
            self._items.pop(row, None)
            return
        self._items[row] = _Neighbours.of(rows, counts)

    def pairs(self, row: int) -> dict[int, float]:
        """``row``'s raw pair counts ``c_ij`` by neighbour row (for tests and tools)."""
        entry = self._items.get(row)
        if entry is None:
            return {}
        return dict(
            zip(entry.rows[: entry.size].tolist(), entry.counts[: entry.size].tolist(), strict=True)
        )

    def remove(self, row: int) -> None:
        """Forget every pair and count involving ``row`` (a deleted item)."""
        self._items.pop(row, None)
        # Pruning is one-sided (``row`` may have dropped a neighbour that still lists it),
        # so every item is checked; deletions are rare.
        for theirs in self._items.values():
            theirs.drop(row)
        if row < len(self.counts):
            self.counts[row] = 0.0

    def neighbours(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, similarities)`` of ``row``'s neighbours, similarity ``c/sqrt(n_i n_j)``."""
        entry = self._items.get(row)
        if entry is None or not entry.size:
            return _EMPTY_ROWS, _EMPTY_SIMS
        rows = entry.rows[: entry.size]
        norm = np.sqrt(np.maximum(self.counts[row] * self.counts[rows], 1.0))
        return rows, entry.counts[: entry.size] / norm

    def similarity(self, row: int, other: int) -> float:
        """``c_ij / sqrt(n_i n_j)`` for one pair (0.0 when never seen together)."""
        entry = self._items.get(row)
        i = None if entry is None else entry.slot.get(other)
        if entry is None or i is None:
            return 0.0
        count = float(entry.counts[i])
        return float(count / np.sqrt(max(self.counts[row] * self.counts[other], 1.0)))

    def scores(self, history: Sequence[int], weights: Sequence[float], width: int) -> np.ndarray:
        """Dense ``(width,)`` array: sum over history rows of weight x similarity."""
        out = np.zeros(width, dtype=np.float64)
        for row, weight in zip(history, weights, strict=True):
            rows, sims = self.neighbours(row)
            if len(rows):
                keep = rows < width
                out[rows[keep]] += weight * sims[keep]
        return out

    def sparse_scores(
        self, history: Sequence[int], weights: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``: the rows any history row co-occurs with (sorted, unique) and
        their sum over history rows of weight x similarity; the sparse form of
        :meth:`scores`."""
        row_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        for row, weight in zip(history, weights, strict=True):
            rows, sims = self.neighbours(row)
            if len(rows):
                row_parts.append(rows)
                score_parts.append(weight * sims)
        if not row_parts:
            return _EMPTY_ROWS, _EMPTY_SIMS
        rows = np.concatenate(row_parts)
        unique, inverse = np.unique(rows, return_inverse=True)
        return unique, np.bincount(inverse, weights=np.concatenate(score_parts))
