"""Item-to-item co-occurrence learned online from the stream.

When a user acts positively on item ``i``, ``i`` is paired with the user's last
``window`` positive items: ``c_ij`` grows by one (both ways) and ``n_i`` by one. The
similarity is ``c_ij / sqrt(n_i n_j)`` (cosine of the co-occurrence vectors). Each item
keeps at most ``max_neighbours`` neighbours (the weakest are pruned), so memory is
bounded by items x neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CoOccurrence"]


class CoOccurrence:
    """Bounded, online item-item co-occurrence counts keyed by item row."""

    def __init__(self, max_neighbours: int = 200) -> None:
        self.max_neighbours = max_neighbours
        self.pairs: dict[int, dict[int, float]] = {}
        self.counts = np.zeros(1024, dtype=np.float64)  # n_i: positive events per item
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _grow(self, row: int) -> None:
        if row >= len(self.counts):
            grown = np.zeros(max(row + 1, 2 * len(self.counts)), dtype=np.float64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def add(self, row: int, history: Sequence[int]) -> None:
        """Record a positive event on ``row`` after the user's positive ``history`` rows."""
        self._grow(row)
        self.counts[row] += 1.0
        mine = self.pairs.setdefault(row, {})
        for other in set(history):
            if other == row:
                continue
            mine[other] = mine.get(other, 0.0) + 1.0
            theirs = self.pairs.setdefault(other, {})
            theirs[row] = theirs.get(row, 0.0) + 1.0
            self._arrays.pop(other, None)
            if len(theirs) > 2 * self.max_neighbours:
                self._prune(other)
        self._arrays.pop(row, None)
        if len(mine) > 2 * self.max_neighbours:
            self._prune(row)

    def _prune(self, row: int) -> None:
        neighbours = self.pairs[row]
        keep = sorted(neighbours.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_neighbours]
        self.pairs[row] = dict(keep)

    def remove(self, row: int) -> None:
        """Forget every pair and count involving ``row`` (a deleted item)."""
        for other in self.pairs.pop(row, {}):
            neighbours = self.pairs.get(other)
            if neighbours is not None:
                neighbours.pop(row, None)
                self._arrays.pop(other, None)
        self._arrays.pop(row, None)
        if row < len(self.counts):
            self.counts[row] = 0.0

    def neighbours(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, similarities)`` of ``row``'s neighbours, similarity ``c/sqrt(n_i n_j)``."""
        arrays = self._arrays.get(row)
        if arrays is None:
            neighbours = self.pairs.get(row)
            if not neighbours:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
            rows = np.fromiter(neighbours.keys(), dtype=np.int64, count=len(neighbours))
            counts = np.fromiter(neighbours.values(), dtype=np.float64, count=len(neighbours))
            arrays = (rows, counts)
            self._arrays[row] = arrays
        rows, counts = arrays
        norm = np.sqrt(np.maximum(self.counts[row] * self.counts[rows], 1.0))
        return rows, counts / norm

    def similarity(self, row: int, other: int) -> float:
        """``c_ij / sqrt(n_i n_j)`` for one pair (0.0 when never seen together)."""
        count = self.pairs.get(row, {}).get(other, 0.0)
        if not count:
            return 0.0
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
