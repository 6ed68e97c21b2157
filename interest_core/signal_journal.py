"""The own signals a worker's view has not seen covered by the fleet's records yet.

An engine applies its own positive events to its item counts at once, and the fleet's
record of an item later replaces that item's row; the signals the record does not cover
yet must then be applied again on top (see :class:`~interest_core.item_view.KnowledgeView`).
A signal concerns its own item and each of its pairs' partners, so it is journalled once
per item it touches: an *entry* (item row, signal, pair position or -1 for the own item).

Entries are kept in columns, one chunk per batch of signals (the engine's micro-batch),
built with a few array operations from the catalog rows the engine already has, instead
of one dictionary entry per item touched per event (an event touches some 20 items). The
entries of a set of records are found in one pass over the chunks when the records
arrive (:meth:`SignalJournal.find`), a few times a second, not per event.

Rows name items for good (a catalog never moves a live item or reuses a row), so an
entry's row is its item for as long as the item lives; a deleted item's entries are
dropped with it (:meth:`SignalJournal.find` then :meth:`SignalJournal.kill`, as
:meth:`~interest_core.item_view.KnowledgeView.remove_many` does). At most ``max_entries``
live entries are kept; beyond that the oldest are forgotten (the records bring their
signals back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from typing import overload

import numpy as np

from interest_core.item_signals import ItemSignal, OwnSignals

__all__ = ["COMPACT_FROM", "Entry", "SignalJournal"]

#: Entries held (live or covered) below which the chunks are never compacted.
COMPACT_FROM = 65_536

#: One live entry: (its signal's index in the chunk, pair position; -1 when the entry is
#: the signal's own item), with where it lives (chunk, index) so that it can be dropped
#: once covered. ``chunk.signals[sig]`` is the signal (made when read: see
#: :class:`~interest_core.item_signals.OwnSignals`); ``chunk.parts[sig]`` and
#: ``chunk.offsets[sig]`` its event's source, which tell whether a record covers it.
Entry = tuple[int, int, "_Chunk", int]


class _Picked(Sequence[ItemSignal]):
    """Some signals of other sequences, in order, each read from its own when asked."""

    __slots__ = ("_at",)

    def __init__(self, at: list[tuple[Sequence[ItemSignal], int]]) -> None:
        self._at = at

    def __len__(self) -> int:
        return len(self._at)

    @overload
    def __getitem__(self, index: int) -> ItemSignal: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemSignal]: ...

    def __getitem__(self, index: int | slice) -> ItemSignal | list[ItemSignal]:
        if isinstance(index, slice):
            return [signals[i] for signals, i in self._at[index]]
        signals, i = self._at[index]
        return signals[i]


class _Chunk:
    """The entries of one batch of signals, in journal order: each signal's own item,
    then its partners."""

    __slots__ = ("alive", "live", "offsets", "parts", "pos", "rows", "sig", "signals", "top")

    def __init__(
        self, signals: Sequence[ItemSignal], own_rows: np.ndarray, pair_rows: np.ndarray
    ) -> None:
        if isinstance(signals, OwnSignals) and signals.own_rows is not None:
            # kept as rows: their widths and sources without making a signal
            counts = np.asarray(signals.widths(), dtype=np.int64)
            heads = signals.heads
            self.parts = [head[0] for head in heads]
            self.offsets = [head[1] for head in heads]
        else:
            counts = np.fromiter((len(s.pairs) for s in signals), np.int64, count=len(signals))
            self.parts = [s.partition for s in signals]
            self.offsets = [s.offset for s in signals]
        n = len(signals) + int(counts.sum())
        if len(pair_rows) != n - len(signals):
            raise ValueError(f"{len(pair_rows)} pair rows for {n - len(signals)} pairs")
        starts = np.arange(len(signals), dtype=np.int64)
        starts[1:] += np.cumsum(counts)[:-1]
        own = np.zeros(n, dtype=bool)
        own[starts] = True
        self.rows = np.empty(n, dtype=np.int64)
        self.rows[own] = own_rows
        self.rows[~own] = pair_rows
        self.sig = np.repeat(np.arange(len(signals), dtype=np.int64), counts + 1)
        self.pos = np.arange(n, dtype=np.int64) - starts[self.sig] - 1  # -1: own item
        self.alive = self.rows >= 0  # an item the catalog did not hold is never asked for
        self.live = int(self.alive.sum())
        self.signals: Sequence[ItemSignal] = signals
        self.top = int(self.rows.max()) if n else -1

    @classmethod
    def merged(cls, chunks: Sequence[_Chunk]) -> _Chunk:
        """One chunk of the live entries of ``chunks``, in order (the dead ones gone)."""
        merged = cls.__new__(cls)
        picked: list[tuple[Sequence[ItemSignal], int]] = []
        parts: list[int] = []
        offsets: list[int] = []
        rows, sig, pos = [], [], []
        for chunk in chunks:
            keep = np.flatnonzero(chunk.alive)
            used, index = np.unique(chunk.sig[keep], return_inverse=True)
            rows.append(chunk.rows[keep])
            sig.append(index.astype(np.int64) + len(picked))
            pos.append(chunk.pos[keep])
            for i in used.tolist():
                picked.append((chunk.signals, i))
                parts.append(chunk.parts[i])
                offsets.append(chunk.offsets[i])
        merged.rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        merged.sig = np.concatenate(sig) if sig else np.empty(0, np.int64)
        merged.pos = np.concatenate(pos) if pos else np.empty(0, np.int64)
        merged.alive = np.ones(len(merged.rows), dtype=bool)
        merged.live = len(merged.rows)
        merged.signals = _Picked(picked)
        merged.parts, merged.offsets = parts, offsets
        merged.top = int(merged.rows.max()) if merged.live else -1
        return merged

    def kill(self, index: int) -> bool:
        """Forget one entry; False when it was already forgotten."""
        if not self.alive[index]:
            return False
        self.alive[index] = False
        self.live -= 1
        return True


class SignalJournal:
    """Own signals by the items they touch, until covered, dropped or too old.

    ``row_of`` maps a live item id to its row (read when signals come without rows).
    """

    def __init__(self, row_of: Mapping[str, int], max_entries: int) -> None:
        self.row_of = row_of
        self.max_entries = max_entries
        self._chunks: deque[_Chunk] = deque()
        self._live = 0
        self._held = 0  # entries held in the chunks, live or not

    def __len__(self) -> int:
        """Live entries."""
        return self._live

    def add(
        self,
        signals: Sequence[ItemSignal],
        own_rows: Sequence[int] | None = None,
        pair_rows: Sequence[int] | None = None,
    ) -> None:
        """Journal ``signals`` (in event order). ``own_rows`` and ``pair_rows`` are their
        items' rows and their pairs' (flat, in order), when the engine has them; else
        they are looked up by id (an id the catalog does not hold is not journalled)."""
        if not signals:
            return
        if not isinstance(signals, OwnSignals):
            signals = list(signals)  # (the engine's sequence is its own: a copy)
        if own_rows is None or pair_rows is None:
            get = self.row_of.get
            own_rows = list(map(get, (s.item_id for s in signals), repeat(-1)))
            pairs = chain.from_iterable(s.pairs for s in signals)
            pair_rows = list(map(get, (other for other, _ in pairs), repeat(-1)))
        chunk = _Chunk(
            signals,
            np.asarray(own_rows, dtype=np.int64),
            np.asarray(pair_rows, dtype=np.int64),
        )
        self._chunks.append(chunk)
        self._live += chunk.live
        self._held += len(chunk.rows)
        self._bound()
        if self._held > 2 * max(self._live, COMPACT_FROM):
            # Mostly covered entries held by a few live ones: keep only the live.
            merged = _Chunk.merged(self._chunks)
            self._chunks = deque([merged]) if merged.live else deque()
            self._held = merged.live

    def _bound(self) -> None:
        """Forget the oldest live entries beyond ``max_entries``."""
        chunks = self._chunks
        while self._live > self.max_entries and chunks:
            oldest = chunks[0]
            excess = self._live - self.max_entries
            if oldest.live <= excess:
                chunks.popleft()
                self._live -= oldest.live
                self._held -= len(oldest.rows)
                continue
            forget = np.flatnonzero(oldest.alive)[:excess]
            oldest.alive[forget] = False
            oldest.live -= len(forget)
            self._live -= len(forget)
        self._drop_dead()

    def _drop_dead(self) -> None:
        chunks = self._chunks
        while chunks and not chunks[0].live:
            self._held -= len(chunks.popleft().rows)

    def find(self, rows: Sequence[int]) -> dict[int, list[Entry]]:
        """The live entries of these ``rows``, each row's in journal order (oldest
        first); rows without entries are left out. One pass over the journal."""
        wanted = [r for r in rows if r is not None and r >= 0]
        found: dict[int, list[Entry]] = {}
        if not wanted or not self._live:
            return found
        top = max(max(wanted), max(chunk.top for chunk in self._chunks))
        asked = np.zeros(top + 1, dtype=bool)
        asked[wanted] = True
        for chunk in self._chunks:
            if not chunk.live:
                continue
            # A row of -1 (an item the catalog did not hold) is never alive.
            hits = np.flatnonzero(chunk.alive & asked[chunk.rows])
            if not len(hits):
                continue
            for index, row, sig, pos in zip(
                hits.tolist(),
                chunk.rows[hits].tolist(),
                chunk.sig[hits].tolist(),
                chunk.pos[hits].tolist(),
                strict=True,
            ):
                entry = (sig, pos, chunk, index)
                if (held := found.get(row)) is None:
                    found[row] = [entry]
                else:
                    held.append(entry)
        return found

    @staticmethod
    def covered(entries: Sequence[Entry], watermarks: Mapping[int, int]) -> list[Entry]:
        """The ``entries`` whose event is at or below its partition's watermark (what a
        record with these ``watermarks`` has counted)."""
        return [
            entry
            for entry in entries
            if entry[2].offsets[entry[0]] <= watermarks.get(entry[2].parts[entry[0]], -1)
        ]

    def kill(self, entries: Sequence[Entry]) -> None:
        """Forget these entries (covered by a record, or their item deleted)."""
        for _, _, chunk, index in entries:
            if chunk.kill(index):
                self._live -= 1
        self._drop_dead()
