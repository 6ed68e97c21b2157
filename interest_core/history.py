"""A user's recent positive history on catalog rows (the co-occurrence window), kept up
to date event by event.

:func:`recent_history` reads it from the user's bounded list of recent items, newest
first: the rows of the items the user acted on positively, each once (its newest
event), at most ``limit``, with the event's weight times ``0.85 ** k`` for the ``k``-th.
Every positive event needs its user's window (its co-occurrence pairs and item signals
come from it), and a user's events come in runs: :class:`HistoryWindows` keeps the
window of the users seen lately and moves it by the one item each event adds, instead of
reading the list again (3.4 against 1.0 us an event with the append, RESULTS.md round
15; property-tested against the read). Anything
else that changed the list or the catalog's rows (items dropped from the old end within
the window's reach, a state restored, an item added to or removed from the catalog)
makes it read the list again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from interest_core.catalog import Catalog
from interest_core.interest import RecentItem, UserState

__all__ = ["HISTORY_DECAY_PER_ITEM", "HistoryWindows", "recent_history"]

HISTORY_DECAY_PER_ITEM = 0.85  # recency weight of the i-th most recent item in co-occurrence

# Windows kept at most (the users seen lately); all are dropped at once past it.
_WINDOWS_KEPT = 8192


def recent_history(
    state: UserState | None, catalog: Catalog, limit: int | None = None
) -> tuple[list[int], list[float]]:
    """Live rows of the user's positive recent items, newest first, with weights (event
    weight x 0.85 per newer item); at most ``limit`` rows (scanning stops there)."""
    if state is None:
        return [], []
    limit = len(state.recent) if limit is None else limit
    if limit <= 0:
        return [], []
    rows, weights, _, _ = _scan(state.recent, catalog.row_of, limit)
    return rows, _decayed(weights)


def _scan(
    recent: deque[RecentItem], row_of: Mapping[str, int], limit: int
) -> tuple[list[int], list[float], list[int], int]:
    """The newest-first read: ``(rows, event weights, each row's place from the newest,
    how many of the newest items were examined)``."""
    rows: list[int] = []
    weights: list[float] = []
    depths: list[int] = []
    for depth, item in enumerate(reversed(recent)):
        if item.weight <= 0.0:
            continue
        row = row_of.get(item.item_id)
        if row is None or row in rows:
            continue
        rows.append(row)
        weights.append(item.weight)
        depths.append(depth)
        if len(rows) == limit:
            return rows, weights, depths, depth + 1
    return rows, weights, depths, len(recent)


_POWERS = [1.0]  # 1, 0.85, 0.85 * 0.85, ...: each the previous times the decay


def _decayed(weights: list[float]) -> list[float]:
    """``weights[k] x 0.85 ** k``, the powers multiplied in turn."""
    while len(_POWERS) < len(weights):
        _POWERS.append(_POWERS[-1] * HISTORY_DECAY_PER_ITEM)
    return [w * _POWERS[k] for k, w in enumerate(weights)]


@dataclass(slots=True)
class _Window:
    """One user's window as of the list it was read from (identified by its newest,
    second oldest and oldest items and its length) and the catalog's row layout."""

    newest: RecentItem
    second: RecentItem | None
    oldest: RecentItem
    length: int
    layout: int
    rows: list[int]
    weights: list[float]  # the events' own weights, not yet decayed
    depths: list[int]  # per row, its item's place from the newest, minus ``shift``
    shift: int
    reach: int  # how many of the newest items a read examined


class HistoryWindows:
    """The co-occurrence windows (``limit`` rows) of the users seen lately, on
    ``catalog``'s rows; each call gives what :func:`recent_history` gives."""

    def __init__(self, catalog: Catalog, limit: int) -> None:
        self.catalog = catalog
        self.limit = limit
        self._windows: dict[str, _Window] = {}

    def rows(self, state: UserState | None) -> list[int]:
        """The window's rows, newest first (a list of the caller's own)."""
        window = self._window(state)
        return [] if window is None else list(window.rows)

    def history(self, state: UserState | None) -> tuple[list[int], list[float]]:
        """The window's rows and decayed weights, as :func:`recent_history` gives them."""
        window = self._window(state)
        if window is None:
            return [], []
        return list(window.rows), _decayed(window.weights)

    def forget(self, user_id: str) -> None:
        self._windows.pop(user_id, None)

    def _window(self, state: UserState | None) -> _Window | None:
        if state is None or not state.recent or self.limit <= 0:
            return None
        window = self._windows.get(state.user_id)
        if window is not None:
            recent = state.recent
            if recent[-1] is window.newest:  # nothing added since: unchanged, or read again
                if (
                    recent[0] is window.oldest
                    and len(recent) == window.length
                    and window.layout == self.catalog.layout
                ):
                    return window
            elif self._follow(window, recent):
                return window
        if len(self._windows) >= _WINDOWS_KEPT:
            self._windows.clear()
        window = self._windows[state.user_id] = self._read(state)
        return window

    def _read(self, state: UserState) -> _Window:
        """The window read from the whole list (:func:`recent_history`'s scan)."""
        recent = state.recent
        rows, weights, depths, reach = _scan(recent, self.catalog.row_of, self.limit)
        return _Window(
            newest=recent[-1],
            second=recent[1] if len(recent) > 1 else None,
            oldest=recent[0],
            length=len(recent),
            layout=self.catalog.layout,
            rows=rows,
            weights=weights,
            depths=depths,
            shift=0,
            reach=reach,
        )

    def _follow(self, window: _Window, recent: deque[RecentItem]) -> bool:
        """Move ``window`` by the one item appended to ``recent`` since it was read (and
        the oldest item dropped, when the window never reached it); False when the list
        or the catalog's rows changed otherwise."""
        n = len(recent)
        if window.layout != self.catalog.layout or n < 2 or recent[-2] is not window.newest:
            return False
        grown = n == window.length + 1 and recent[0] is window.oldest
        slid = n == window.length and recent[0] is window.second and window.reach < n
        if not (grown or slid):
            return False
        item = recent[-1]
        shift = window.shift = window.shift + 1  # every row's item is one place further
        rows, depths, limit = window.rows, window.depths, self.limit
        row = self.catalog.row_of.get(item.item_id) if item.weight > 0.0 else None
        if row is not None:
            weights = window.weights
            if row in rows:  # its older event leaves the window
                at = rows.index(row)
                del rows[at], weights[at], depths[at]
            rows.insert(0, row)
            weights.insert(0, item.weight)
            depths.insert(0, -shift)
            if len(rows) > limit:
                del rows[-1], weights[-1], depths[-1]
        # A read stops at the last row's item when the window is full, else reads all.
        window.reach = depths[-1] + shift + 1 if len(rows) == limit else n
        window.newest, window.oldest, window.length = item, recent[0], n
        window.second = recent[1]
        return True
