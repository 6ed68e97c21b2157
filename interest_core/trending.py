"""Time-decayed popularity of items, in event time.

Each positive event adds its weight to its item; all scores halve every
``half_life_s`` seconds of event time. Scores are kept relative to a reference time and
rebased before they could overflow, so an update costs O(1) and a read O(items).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Trending"]

_REBASE_EXPONENT = 60.0  # rebase when the growth factor would pass 2**60


class Trending:
    """Decayed interaction weight per item row."""

    def __init__(self, half_life_s: float = 86400.0) -> None:
        self.half_life_s = half_life_s
        self.reference_ts: float | None = None
        self._raw = np.zeros(1024, dtype=np.float64)  # scores at reference_ts, scaled

    def _grow(self, row: int) -> None:
        if row >= len(self._raw):
            grown = np.zeros(max(row + 1, 2 * len(self._raw)), dtype=np.float64)
            grown[: len(self._raw)] = self._raw
            self._raw = grown

    def _exponent(self, ts: float) -> float:
        if self.reference_ts is None or math.isinf(self.half_life_s) or self.half_life_s <= 0:
            return 0.0
        return (ts - self.reference_ts) / self.half_life_s

    def add(self, row: int, weight: float, ts: float) -> None:
        """Add ``weight`` to ``row`` at event time ``ts`` (seconds)."""
        self._grow(row)
        if self.reference_ts is None:
            self.reference_ts = ts
        exponent = self._exponent(ts)
        if exponent > _REBASE_EXPONENT:
            self._raw *= math.exp2(-exponent)
            self.reference_ts = ts
            exponent = 0.0
        self._raw[row] += weight * math.exp2(exponent)

    def set(self, row: int, value: float, ts: float) -> None:
        """Set ``row``'s score to ``value`` as of event time ``ts`` (seconds), replacing
        what it held (the fleet's shared knowledge of the item)."""
        self._grow(row)
        if self.reference_ts is None:
            self.reference_ts = ts
        exponent = self._exponent(ts)
        if exponent > _REBASE_EXPONENT:
            self._raw *= math.exp2(-exponent)
            self.reference_ts = ts
            exponent = 0.0
        self._raw[row] = value * math.exp2(exponent)

    def remove(self, row: int) -> None:
        """Forget ``row`` (a deleted item)."""
        if row < len(self._raw):
            self._raw[row] = 0.0

    def scores(self, now_ts: float, width: int) -> np.ndarray:
        """Dense ``(width,)`` decayed scores at event time ``now_ts``."""
        out = np.zeros(width, dtype=np.float64)
        n = min(width, len(self._raw))
        out[:n] = self._raw[:n] * math.exp2(-self._exponent(now_ts))
        return out
