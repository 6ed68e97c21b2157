"""Item-to-item co-occurrence learned online from the stream.

When a user acts positively on item ``i``, ``i`` is paired with the user's last
``window`` positive items: ``c_ij`` grows (both ways) by ``decay ** position`` of ``j``
in the history, newest first (one when ``decay`` is 1), and ``n_i`` by one. The
similarity is ``c_ij / sqrt(n_i n_j)`` (cosine of the co-occurrence vectors). Each item
keeps at most ``max_neighbours`` neighbours (when it holds twice that many, the weakest
are pruned), so memory is bounded by items x neighbours.

Storage: every item's neighbours are a block of one pool of (row, count) pairs, in
insertion order (a dropped entry is replaced by the block's last one; a pruning keeps the
strongest, strongest first, ties by row). A block that is full moves to the pool's end
at twice its size; the pool is compacted when it runs out. Each update is one compiled
call (numba): about 40 dictionary and numpy-scalar operations per event in Python before,
a few linear scans of short arrays now. ``tests/unit/cooccurrence_reference.py`` keeps the
plain Python table it replaced, and a property test holds the two to the same pairs, in
the same order, with the same values.

With ``background=True`` the queue is applied in chunks by a thread of its own while the
caller goes on (the kernel releases the interpreter lock): once ``_CHUNK`` adds are
queued and no chunk is in flight, they are handed over, and :meth:`CoOccurrence.hand_over`
hands over the rest behind them (the engine calls it when a batch's events are applied,
before the content search that precedes the first read); every read or other change
waits for the chunks in flight first, so reads see exactly what they would see without
the thread (another test holds the two to the same table after any mix of adds and reads).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["CoOccurrence", "warm_up"]

_EMPTY_ROWS = np.empty(0, dtype=np.int64)
_EMPTY_SIMS = np.empty(0, dtype=np.float64)
_FIRST_BLOCK = 8  # entries a new item's block holds
_POOL_START = 1 << 14  # entries of the pool at first
# sparse_scores lists its rows by a pass over every row's mark instead of sorting them
# when it touched at least one row in this many.
_SCAN_OVER_SORT = 16
# meta[]: the pool's first free entry, the entries held by live blocks (capacity)
_TOP, _HELD = 0, 1
# Queued adds handed to the background thread at once (background tables). A hand-over
# cost the caller 0.5-0.7 us an event (~45 us a chunk); a chunk of 64 is some 0.5 ms of
# the thread's (7.7 us an add replayed); 32, 128 and 256 were slower (docs/RESULTS.md,
# round 19).
_CHUNK = 64

_settler: tuple[int, ThreadPoolExecutor] | None = None
_settler_lock = threading.Lock()


def _settler_pool() -> ThreadPoolExecutor:
    """The process's one thread that applies background tables' chunks (made again in
    a child process, which does not inherit the thread)."""
    global _settler
    with _settler_lock:
        if _settler is None or _settler[0] != os.getpid():
            _settler = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="cooccurrence"))
        return _settler[1]


@njit(cache=True, nogil=True)
def _find(prow: np.ndarray, start: int, size: int, other: int) -> int:  # pragma: no cover
    for k in range(start, start + size):
        if prow[k] == other:
            return k
    return -1


@njit(cache=True, nogil=True)
def _need(row: int, appended: int, others: np.ndarray, cap: np.ndarray) -> int:  # pragma: no cover
    """Pool entries an update may take at most: ``row``'s block taking ``appended`` new
    entries (each move doubles it: at most ``4 (capacity + appended) + 16`` in all) and
    each of ``others`` one new entry (one move, to twice its capacity)."""
    need = 4 * (cap[row] + appended) + 2 * _FIRST_BLOCK
    for other in others:
        need += max(_FIRST_BLOCK, 2 * cap[other])
    return need


@njit(cache=True, nogil=True)
def _append(
    item: int,
    other: int,
    amount: float,
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    meta: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """A new entry at the end of ``item``'s block, moving the block when it is full."""
    n = size[item]
    if n == cap[item]:
        grown = max(_FIRST_BLOCK, 2 * n)
        top = meta[_TOP]
        old = start[item]
        for k in range(n):
            prow[top + k] = prow[old + k]
            pcnt[top + k] = pcnt[old + k]
        start[item] = top
        meta[_TOP] = top + grown
        meta[_HELD] += grown - cap[item]
        cap[item] = grown
    k = start[item] + n
    prow[k] = other
    pcnt[k] = amount
    size[item] = n + 1


@njit(cache=True, nogil=True)
def _keep_strongest(
    item: int, keep: int, start: np.ndarray, size: np.ndarray, prow: np.ndarray, pcnt: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Keep ``item``'s ``keep`` strongest entries, strongest first, ties by row."""
    s, n = start[item], size[item]
    rows = prow[s : s + n].copy()
    counts = pcnt[s : s + n].copy()
    by_row = np.argsort(rows, kind="mergesort")
    order = by_row[np.argsort(-counts[by_row], kind="mergesort")]
    kept = min(keep, n)
    for k in range(kept):
        prow[s + k] = rows[order[k]]
        pcnt[s + k] = counts[order[k]]
    size[item] = kept


@njit(cache=True, nogil=True)
def _bump(
    item: int,
    other: int,
    amount: float,
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    meta: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Add ``amount`` to ``item``'s pair with ``other``; True when the pair is new."""
    k = _find(prow, start[item], size[item], other)
    if k >= 0:
        pcnt[k] += amount
        return False
    _append(item, other, amount, start, cap, size, prow, pcnt, meta)
    return True


@njit(cache=True, nogil=True)
def _add_one(
    row: int,
    history: np.ndarray,
    decay: float,
    limit: int,
    keep: int,
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    meta: np.ndarray,
    mark: np.ndarray,
    others: np.ndarray,
    amounts: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One :meth:`CoOccurrence.add`'s pairs (the pool has room: see :func:`_need`; the
    add itself counts ``n_row``).

    ``row``'s side takes one scan of its block for all of the history (``mark``, zero
    per row between calls, holds each distinct other's place in ``others``) instead of
    one scan per pair; its new pairs are appended in history order afterwards, as the
    pair-by-pair loop appended them. Each other's side is one scan of that other's
    block. ``others`` and ``amounts`` are scratch of the history's length or more."""
    distinct = 0
    amount = 1.0
    for j in range(history.shape[0]):
        other = history[j]
        if other == row or mark[other] != 0:
            continue
        others[distinct] = other
        amounts[distinct] = amount
        distinct += 1
        mark[other] = distinct
        amount *= decay
    s = start[row]
    for k in range(s, s + size[row]):
        at = mark[prow[k]]
        if at > 0:
            pcnt[k] += amounts[at - 1]
            mark[prow[k]] = -at  # held: no new entry
    for d in range(distinct):
        other = others[d]
        if mark[other] > 0:
            _append(row, other, amounts[d], start, cap, size, prow, pcnt, meta)
        mark[other] = 0
    for d in range(distinct):
        other = others[d]
        if (
            _bump(other, row, amounts[d], start, cap, size, prow, pcnt, meta)
            and size[other] > limit
        ):
            _keep_strongest(other, keep, start, size, prow, pcnt)
    if size[row] > limit:
        _keep_strongest(row, keep, start, size, prow, pcnt)


@njit(cache=True, nogil=True)
def _add_many(
    first: int,
    rows: np.ndarray,
    histories: np.ndarray,
    ends: np.ndarray,
    decays: np.ndarray,
    limit: int,
    keep: int,
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    meta: np.ndarray,
    mark: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """The queued :meth:`CoOccurrence.add` calls from ``first`` on, in order (event ``k``'s
    history is ``histories[ends[k-1]:ends[k]]``); returns the index of the first one the
    pool had no room for (``len(rows)`` when all were applied). ``mark``: zeros, one per
    row (see :func:`_add_one`), left so."""
    longest = 0
    for k in range(first, rows.shape[0]):
        lo = ends[k - 1] if k > 0 else 0
        longest = max(longest, ends[k] - lo)
    others = np.empty(longest, dtype=np.int64)
    amounts = np.empty(longest, dtype=np.float64)
    for k in range(first, rows.shape[0]):
        lo = ends[k - 1] if k > 0 else 0
        history = histories[lo : ends[k]]
        if meta[_TOP] + _need(rows[k], history.shape[0], history, cap) > prow.shape[0]:
            return k
        _add_one(
            rows[k],
            history,
            decays[k],
            limit,
            keep,
            start,
            cap,
            size,
            prow,
            pcnt,
            meta,
            mark,
            others,
            amounts,
        )
    return rows.shape[0]


@njit(cache=True, nogil=True)
def _add_one_side(
    row: int,
    others: np.ndarray,
    amounts: np.ndarray,
    each: bool,
    limit: int,
    keep: int,
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    meta: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """:meth:`CoOccurrence.add_one_side`'s pairs: 0, or (nothing changed) the pool
    entries it needs free when the pool has fewer. With ``each``, a pruning follows
    every pair that leaves the block over ``limit``, as one call per pair would."""
    need = 4 * (cap[row] + others.shape[0]) + 2 * _FIRST_BLOCK
    if meta[_TOP] + need > prow.shape[0]:
        return need
    for j in range(others.shape[0]):
        _bump(row, others[j], amounts[j], start, cap, size, prow, pcnt, meta)
        if each and size[row] > limit:
            _keep_strongest(row, keep, start, size, prow, pcnt)
    if size[row] > limit:
        _keep_strongest(row, keep, start, size, prow, pcnt)
    return 0


@njit(cache=True, nogil=True)
def _drop_everywhere(
    gone: int, start: np.ndarray, size: np.ndarray, prow: np.ndarray, pcnt: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Remove the pair with ``gone`` from every block (the last entry fills its place)."""
    for item in range(size.shape[0]):
        n = size[item]
        if n == 0:
            continue
        s = start[item]
        k = _find(prow, s, n, gone)
        if k < 0:
            continue
        last = s + n - 1
        prow[k] = prow[last]
        pcnt[k] = pcnt[last]
        size[item] = n - 1


@njit(cache=True, nogil=True)
def _compact(
    start: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    new_rows: np.ndarray,
    new_counts: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Copy every live block into the new pool, end to end; returns the new first free."""
    top = 0
    for item in range(size.shape[0]):
        if cap[item] == 0:
            continue
        s, n = start[item], size[item]
        for k in range(n):
            new_rows[top + k] = prow[s + k]
            new_counts[top + k] = pcnt[s + k]
        start[item] = top
        top += cap[item]
    return top


@njit(cache=True, nogil=True)
def _sparse_scores(
    history: np.ndarray,
    weights: np.ndarray,
    counts: np.ndarray,
    start: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
    sums: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:meth:`CoOccurrence.sparse_scores` in one call. The sums run in the order
    ``np.bincount`` took them (history order, then block order), so they are the same
    floats. ``sums`` (float64 zeros) and ``seen`` (False), one per row, are left so."""
    total = 0
    for h in history:
        total += size[h]
    touched = np.empty(total, dtype=np.int64)
    n_touched = 0
    for k in range(history.shape[0]):
        h = history[k]
        weight = weights[k]
        for j in range(start[h], start[h] + size[h]):
            other = prow[j]
            if not seen[other]:
                seen[other] = True
                touched[n_touched] = other
                n_touched += 1
            sums[other] += weight * (pcnt[j] / math.sqrt(max(counts[h] * counts[other], 1.0)))
    scores = np.empty(n_touched, dtype=np.float64)
    if n_touched * _SCAN_OVER_SORT >= seen.shape[0]:
        # Many rows touched: one pass over the marks gives them in order, cheaper than a
        # sort (bench stream, 2,048 rows, ~1,300 touched: 29 us a call against 72).
        rows = np.empty(n_touched, dtype=np.int64)
        k = 0
        for row in range(seen.shape[0]):
            if seen[row]:
                rows[k] = row
                scores[k] = sums[row]
                sums[row] = 0.0
                seen[row] = False
                k += 1
        return rows, scores
    rows = np.sort(touched[:n_touched])
    for k in range(n_touched):
        scores[k] = sums[rows[k]]
        sums[rows[k]] = 0.0
        seen[rows[k]] = False
    return rows, scores


@njit(cache=True, nogil=True)
def _similarities(
    rows: np.ndarray,
    other: int,
    counts: np.ndarray,
    start: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """:meth:`CoOccurrence.similarity` of each of ``rows`` with ``other``."""
    out = np.zeros(rows.shape[0], dtype=np.float64)
    for k in range(rows.shape[0]):
        row = rows[k]
        if row >= size.shape[0]:
            continue
        j = _find(prow, start[row], size[row], other)
        if j >= 0:
            out[k] = pcnt[j] / math.sqrt(max(counts[row] * counts[other], 1.0))
    return out


@njit(cache=True, nogil=True)
def _strongest(
    rows: np.ndarray,
    weights: np.ndarray,
    other: int,
    counts: np.ndarray,
    start: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Index ``k`` of the largest positive ``weights[k] x`` similarity of ``rows[k]``
    with ``other`` (the first on a tie), or -1 when none is positive."""
    similarities = _similarities(rows, other, counts, start, size, prow, pcnt)
    best, best_at = 0.0, -1
    for k in range(rows.shape[0]):
        value = similarities[k] * weights[k]
        if value > best:
            best, best_at = value, k
    return best_at


@njit(cache=True, nogil=True)
def _strongest_each(
    rows: np.ndarray,
    weights: np.ndarray,
    others: np.ndarray,
    counts: np.ndarray,
    start: np.ndarray,
    size: np.ndarray,
    prow: np.ndarray,
    pcnt: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`_strongest` for each of ``others`` (-1 for a row past the table)."""
    out = np.full(others.shape[0], -1, dtype=np.int64)
    for m in range(others.shape[0]):
        if others[m] < counts.shape[0]:
            out[m] = _strongest(rows, weights, others[m], counts, start, size, prow, pcnt)
    return out


class CoOccurrence:
    """Bounded, online item-item co-occurrence counts keyed by item row.

    :meth:`add` counts its item and queues its pairs (a few list appends); the queue is
    applied, in order and in one compiled call, before anything else reads or changes the
    table, so every read sees every add made before it (the engine reads the table once
    per fusion lesson and once per ranking, not once per event). ``background``: the
    queue goes to a thread in chunks meanwhile (see the module's doc).
    """

    def __init__(self, max_neighbours: int = 200, *, background: bool = False) -> None:
        self.max_neighbours = max_neighbours
        #: Apply queued adds in chunks on a thread of their own (see the module's doc).
        self.background = background
        self._counts = np.zeros(1024, dtype=np.float64)  # n_i: positive events per item
        self._start = np.zeros(1024, dtype=np.int64)  # block of each row in the pool
        self._cap = np.zeros(1024, dtype=np.int64)  # its capacity (0: no block)
        self._size = np.zeros(1024, dtype=np.int64)  # its live entries
        self._mark = np.zeros(1024, dtype=np.int64)  # scratch of the compiled add: zeros
        self._rows = np.empty(_POOL_START, dtype=np.int64)  # neighbour rows
        self._pairs = np.empty(_POOL_START, dtype=np.float64)  # pair counts c_ij
        self._meta = np.zeros(2, dtype=np.int64)  # first free entry, entries held
        # Queued adds: rows, their histories end to end, where each ends, their decays.
        self._queued: list[int] = []
        self._histories: list[int] = []
        self._ends: list[int] = []
        self._decays: list[float] = []
        # The chunks handed to the background thread, oldest first (one thread applies
        # them in that order; it never touches _counts: an add counts n_i itself, so
        # count_of reads it while pairs are in flight).
        self._flights: deque[Future[None]] = deque()
        # Scratch of sparse_scores: a sum and a mark per row, zero between calls.
        self._sums = np.zeros(0, dtype=np.float64)
        self._seen = np.zeros(0, dtype=np.bool_)

    @property
    def counts(self) -> np.ndarray:
        """``n_i`` by row: positive events per item (the queued adds included)."""
        self._settle()
        return self._counts

    def count_of(self, row: int) -> float:
        """``n_row`` with the queued adds, without applying their pairs (one event's read)."""
        return float(self._counts[row]) if 0 <= row < len(self._counts) else 0.0

    # ------------------------------------------------------------------ storage

    def _grow(self, row: int) -> None:
        """Room for rows up to ``row`` in the per-row arrays."""
        if row < len(self._counts):
            return
        length = max(row + 1, 2 * len(self._counts))
        for name in ("_counts", "_start", "_cap", "_size", "_mark"):
            old = getattr(self, name)
            grown = np.zeros(length, dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def _grow_for(self, row: int, neighbours: np.ndarray) -> None:
        """Room for ``row`` and every neighbour row it is about to store: the compiled
        reads index the per-row arrays by neighbour, unchecked."""
        if len(neighbours) and int(neighbours.min()) < 0:
            raise ValueError("neighbour rows must not be negative")
        self._grow(max(row, int(neighbours.max())) if len(neighbours) else row)

    def _repack(self, need: int) -> None:
        """A pool with ``need`` free entries or more past the live blocks, compacted."""
        held = int(self._meta[_HELD])
        length = len(self._rows)
        while length < 2 * (held + need):
            length *= 2
        rows = np.empty(length, dtype=np.int64)
        pairs = np.empty(length, dtype=np.float64)
        top = _compact(self._start, self._cap, self._size, self._rows, self._pairs, rows, pairs)
        self._rows, self._pairs = rows, pairs
        self._meta[_TOP] = top

    def _take_queue(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The queued adds as arrays (rows, histories end to end, ends, decays), the queue
        emptied and the per-row arrays grown to hold every row they name."""
        rows = np.array(self._queued, dtype=np.int64)
        histories = np.array(self._histories, dtype=np.int64)
        ends = np.array(self._ends, dtype=np.int64)
        decays = np.array(self._decays, dtype=np.float64)
        self._queued, self._histories, self._ends, self._decays = [], [], [], []
        top = max(int(rows.max()), int(histories.max()) if len(histories) else 0)
        if top >= len(self._counts):
            self._land()  # the per-row arrays are replaced: not under a chunk in flight
            self._grow(top)
        return rows, histories, ends, decays

    def _apply_queued(
        self, rows: np.ndarray, histories: np.ndarray, ends: np.ndarray, decays: np.ndarray
    ) -> None:
        """Apply taken adds, in order, compacting the pool when it runs out."""
        limit, keep = 2 * self.max_neighbours, self.max_neighbours
        done = 0
        while True:
            done = _add_many(
                done,
                rows,
                histories,
                ends,
                decays,
                limit,
                keep,
                self._start,
                self._cap,
                self._size,
                self._rows,
                self._pairs,
                self._meta,
                self._mark,
            )
            if done == len(rows):
                return
            lo = int(ends[done - 1]) if done else 0
            history = histories[lo : ends[done]]
            self._repack(int(_need(rows[done], len(history), history, self._cap)))

    def _land(self) -> None:
        """Wait for the chunks in flight, in order (an error is raised here)."""
        while self._flights:
            self._flights.popleft().result()

    def _hand_over(self, *, behind: bool = False) -> None:
        """Give the queue to the background thread: when it holds no chunk, or
        (``behind``) after the chunks it holds."""
        while self._flights and self._flights[0].done():
            self._flights.popleft().result()  # done: its error, if any, is raised here
        if self._flights and not behind:
            return
        taken = self._take_queue()
        try:
            self._flights.append(_settler_pool().submit(self._apply_queued, *taken))
        except RuntimeError:  # the interpreter is shutting down: no new threads' work
            self._land()
            self._apply_queued(*taken)

    def hand_over(self) -> None:
        """Give the queued adds to the background thread now, behind the chunks it holds
        (a background table; a caller about to do other work before its next read calls
        this). Fewer than half a chunk stay queued: the hand-over and the thread's start
        would cost more than applying them at the read (batches of 25 events: some 20
        adds, 8 us more CPU an event and no less wall time; docs/RESULTS.md, round 21)."""
        if self.background and len(self._queued) >= max(_CHUNK // 2, 1):
            self._hand_over(behind=True)

    def _settle(self) -> None:
        """Apply the queued adds, in order (after the chunks in flight)."""
        self._land()
        if self._queued:
            self._apply_queued(*self._take_queue())

    def _block(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of ``row``'s live neighbour rows and pair counts."""
        self._settle()
        if row >= len(self._size):
            return _EMPTY_ROWS, _EMPTY_SIMS
        s, n = int(self._start[row]), int(self._size[row])
        return self._rows[s : s + n], self._pairs[s : s + n]

    def _free(self, row: int) -> None:
        """Give up ``row``'s block (its entries are gone)."""
        self._meta[_HELD] -= self._cap[row]
        self._cap[row] = self._size[row] = 0

    # ------------------------------------------------------------------ updates

    def add(self, row: int, history: Sequence[int], *, decay: float = 1.0) -> None:
        """Record a positive event on ``row`` after the user's positive ``history`` rows,
        newest first: the pair with the ``i``-th newest distinct other row counts
        ``decay ** i`` (1.0 each when ``decay`` is 1); ``row`` itself and repeats are
        skipped, so items consumed close together count most."""
        if not 0 <= row < len(self._counts):
            if row < 0:
                raise ValueError(f"rows must not be negative, got {row}")
            self._land()  # the per-row arrays are replaced: not under a chunk in flight
            self._grow(row)
        self._counts[row] += 1.0
        self._queued.append(row)
        self._histories += history
        self._ends.append(len(self._histories))
        self._decays.append(decay)
        if self.background and len(self._queued) >= _CHUNK:
            self._hand_over()

    def add_one_side(
        self,
        row: int,
        count: float,
        others: Sequence[int],
        amounts: Sequence[float],
        *,
        pair_by_pair: bool = False,
    ) -> None:
        """Add ``count`` to ``n_row`` and ``amounts`` to ``row``'s pairs with ``others``,
        on ``row``'s side only (one item's share of :meth:`add`, as the item-keyed stage
        splits it); prunes as :meth:`add` does, once the pairs are in. ``pair_by_pair``:
        prunes after each pair instead, so that the table ends as after one call per pair
        (``count`` 0 but the first), to the last bit, in one compiled call."""
        self._settle()
        rows = np.asarray(others, dtype=np.int64)
        values = np.asarray(amounts, dtype=np.float64)
        if len(rows) != len(values):
            raise ValueError(f"{len(rows)} others but {len(values)} amounts")
        self._grow_for(row, rows)
        self._counts[row] += count
        if not len(rows):
            return
        limit, keep = 2 * self.max_neighbours, self.max_neighbours
        while need := _add_one_side(
            row,
            rows,
            values,
            pair_by_pair,
            limit,
            keep,
            self._start,
            self._cap,
            self._size,
            self._rows,
            self._pairs,
            self._meta,
        ):
            self._repack(need)

    def set_item(self, row: int, count: float, rows: np.ndarray, counts: np.ndarray) -> None:
        """Replace ``row``'s count ``n_i`` and its neighbour pair counts wholesale (the
        item knowledge shared by the fleet, see :mod:`interest_core.item_knowledge`);
        ``rows`` must be distinct and not ``row``."""
        self._settle()
        self._grow_for(row, rows)
        self._counts[row] = count
        self._free(row)
        n = len(rows)
        if not n:
            return
        if int(self._meta[_TOP]) + n > len(self._rows):
            self._repack(n)
        top = int(self._meta[_TOP])
        self._rows[top : top + n] = rows
        self._pairs[top : top + n] = counts
        self._start[row], self._cap[row], self._size[row] = top, n, n
        self._meta[_TOP] = top + n
        self._meta[_HELD] += n

    def remove(self, row: int) -> None:
        """Forget every pair and count involving ``row`` (a deleted item)."""
        self._settle()
        if row >= len(self._counts):
            return
        self._free(row)
        # Pruning is one-sided (``row`` may have dropped a neighbour that still lists it),
        # so every item is checked; deletions are rare.
        _drop_everywhere(row, self._start, self._size, self._rows, self._pairs)
        self._counts[row] = 0.0

    # ------------------------------------------------------------------ reads

    def pairs(self, row: int) -> dict[int, float]:
        """``row``'s raw pair counts ``c_ij`` by neighbour row (for tests and tools)."""
        rows, counts = self._block(row)
        return dict(zip(rows.tolist(), counts.tolist(), strict=True))

    def neighbours(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, similarities)`` of ``row``'s neighbours, similarity ``c/sqrt(n_i n_j)``."""
        rows, counts = self._block(row)
        if not len(rows):
            return _EMPTY_ROWS, _EMPTY_SIMS
        norm = np.sqrt(np.maximum(self._counts[row] * self._counts[rows], 1.0))
        return rows, counts / norm

    def similarity(self, row: int, other: int) -> float:
        """``c_ij / sqrt(n_i n_j)`` for one pair (0.0 when never seen together)."""
        rows, counts = self._block(row)
        if not len(rows):
            return 0.0
        where = np.flatnonzero(rows == other)
        if not len(where):
            return 0.0
        count = float(counts[where[0]])
        n = self._counts
        return float(count / np.sqrt(max(n[row] * n[other], 1.0)))

    def similarities(self, rows: Sequence[int], other: int) -> np.ndarray:
        """:meth:`similarity` of each of ``rows`` with ``other``, in one call."""
        self._settle()
        if other >= len(self._counts):
            return np.zeros(len(rows), dtype=np.float64)
        return _similarities(
            np.asarray(rows, dtype=np.int64),
            other,
            self._counts,
            self._start,
            self._size,
            self._rows,
            self._pairs,
        )

    def strongest(self, rows: Sequence[int], weights: Sequence[float], other: int) -> int:
        """Index of the row of ``rows`` whose :meth:`similarity` with ``other`` times its
        weight is largest and positive (the first on a tie), or -1 when none is."""
        return int(self.strongest_each(rows, weights, [other])[0])

    def strongest_each(
        self, rows: Sequence[int], weights: Sequence[float], others: Sequence[int]
    ) -> np.ndarray:
        """:meth:`strongest` for each of ``others``, in one compiled call."""
        if len(rows) != len(weights):
            raise ValueError(f"{len(rows)} rows but {len(weights)} weights")
        self._settle()
        wanted = np.asarray(others, dtype=np.int64)
        if not len(rows):
            return np.full(len(wanted), -1, dtype=np.int64)
        out: np.ndarray = _strongest_each(
            np.asarray(rows, dtype=np.int64),
            np.asarray(weights, dtype=np.float64),
            wanted,
            self._counts,
            self._start,
            self._size,
            self._rows,
            self._pairs,
        )
        return out

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
        self._settle()
        rows = np.asarray(history, dtype=np.int64)
        values = np.asarray(weights, dtype=np.float64)
        if len(rows) and int(rows.max()) >= len(self._counts):  # rows never paired
            known = rows < len(self._counts)
            rows, values = rows[known], values[known]
        if len(self._sums) != len(self._counts):
            self._sums = np.zeros(len(self._counts), dtype=np.float64)
            self._seen = np.zeros(len(self._counts), dtype=np.bool_)
        return _sparse_scores(
            rows,
            values,
            self._counts,
            self._start,
            self._size,
            self._rows,
            self._pairs,
            self._sums,
            self._seen,
        )


@functools.cache  # once per process: every engine calls it
def warm_up() -> None:
    """Load (or compile, the first time on a machine) every compiled kernel of the table
    on a scratch one, so that the first batch does not pay for it (in a fresh process
    with the compiled cache in place, an engine's first batch of 180 MovieLens events
    took 28-29 ms without this, 9 ms with it; the engine's construction 25-30 ms more)."""
    table = CoOccurrence(max_neighbours=2)
    for row in range(6):  # more neighbours than kept: the add prunes
        table.add(row, [(row + k) % 6 for k in range(1, 5)], decay=0.9)
    table.add_one_side(1, 1.0, [2, 3, 4, 5], [1.0, 0.5, 0.25, 0.125])
    table.sparse_scores([1, 2], [1.0, 0.5])
    table.similarities([1, 2], 3)
    table.similarity(1, 2)
    table.set_item(0, 2.0, np.array([4, 5], dtype=np.int64), np.array([1.0, 1.0]))
    table._repack(1)
    table.remove(3)
