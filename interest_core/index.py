"""Nearest-item search by inner product (cosine on unit vectors) with faiss.

:class:`ItemIndex` keys vectors by integer item rows. It is exact
(``IndexIDMap2`` over ``IndexFlatIP``) up to ``exact_max_items`` live items and
approximate (``IndexHNSWFlat``, inner product) beyond. HNSW cannot remove vectors, so a
changed or deleted item leaves a tombstone: searches over-fetch and filter them, and the
graph is rebuilt from the live vectors when tombstones pass a quarter of the live items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faiss
import numpy as np

if TYPE_CHECKING:
    from interest_core.settings import IndexSettings

__all__ = ["ItemIndex"]

log = logging.getLogger(__name__)

# faiss parallelises over queries with OpenMP; for a handful of queries the threads'
# spin-waiting costs 10x the search itself on a busy machine, so small batches run on
# one thread and large ones on all of them.
_PARALLEL_MIN_QUERIES = 64
_MAX_THREADS = faiss.omp_get_max_threads()


class ItemIndex:
    """Upsert, delete and batched top-k search of item vectors, keyed by item row (int >= 0).

    ``search`` returns ``(scores, rows)`` of shape ``(n_queries, k)``: inner products
    (cosine for unit vectors), best first; unused slots have row -1 and score -inf.
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_max_items: int = 200_000,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        hnsw_ef_construction: int = 80,
        tombstone_ratio: float = 0.25,
    ) -> None:
        self.dim = dim
        self.exact_max_items = exact_max_items
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.hnsw_ef_construction = hnsw_ef_construction
        self.tombstone_ratio = tombstone_ratio
        self._vectors: dict[int, np.ndarray] = {}  # live row -> vector
        # faiss id -> row (-1: removed or tombstone); each write of a row gets a fresh id
        self._id_row = np.full(1024, -1, dtype=np.int64)
        self._current: dict[int, int] = {}  # live row -> its faiss id
        self._next_id = 0
        self._tombstones = 0
        self.approximate = False
        self._index: faiss.Index = self._new_index(approximate=False)

    @classmethod
    def configured(cls, dim: int, settings: IndexSettings) -> ItemIndex:
        """An index of ``dim`` with the thresholds and HNSW parameters of ``settings``."""
        return cls(
            dim,
            exact_max_items=settings.exact_max_items,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_search=settings.hnsw_ef_search,
            hnsw_ef_construction=settings.hnsw_ef_construction,
        )

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, row: object) -> bool:
        return row in self._vectors

    @property
    def tombstones(self) -> int:
        """Dead vectors still inside an approximate index (always 0 when exact)."""
        return self._tombstones

    def _new_index(self, *, approximate: bool) -> faiss.Index:
        if approximate:
            hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.hnsw_ef_construction
            hnsw.hnsw.efSearch = self.hnsw_ef_search
            return faiss.IndexIDMap(hnsw)
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_ids(self, rows: list[int]) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
        self._next_id += len(rows)
        if self._next_id > len(self._id_row):
            grown = np.full(max(self._next_id, 2 * len(self._id_row)), -1, dtype=np.int64)
            grown[: len(self._id_row)] = self._id_row
            self._id_row = grown
        self._id_row[ids] = rows
        for internal, row in zip(ids.tolist(), rows, strict=True):
            self._current[row] = internal
        return ids

    # ------------------------------------------------------------------ updates

    def upsert(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Add or replace the vectors of ``rows`` (``vectors`` shape ``(len(rows), dim)``)."""
        if len(rows) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        last: dict[int, int] = {int(row): i for i, row in enumerate(rows)}  # last write wins
        self._drop([row for row in last if row in self._vectors])
        picked = np.ascontiguousarray(vectors[list(last.values())])
        for row, i in last.items():
            self._vectors[row] = vectors[i].copy()
        if not self.approximate and len(self._vectors) > self.exact_max_items:
            self._rebuild(approximate=True)
            return
        ids = self._new_ids(list(last))
        self._index.add_with_ids(picked, ids)
        self._maybe_compact()

    def delete(self, rows: Sequence[int]) -> None:
        """Remove ``rows`` from search results (unknown rows are ignored)."""
        self._drop([int(row) for row in rows if int(row) in self._vectors])
        self._maybe_compact()

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        internal = np.asarray([self._current.pop(row) for row in rows], dtype=np.int64)
        for row in rows:
            del self._vectors[row]
        self._id_row[internal] = -1
        if self.approximate:
            self._tombstones += len(rows)
        else:
            self._index.remove_ids(internal)  # type: ignore[arg-type]

    def _maybe_compact(self) -> None:
        if self.approximate and self._tombstones > self.tombstone_ratio * max(len(self), 1000):
            self._rebuild(approximate=len(self._vectors) > self.exact_max_items)

    def _rebuild(self, *, approximate: bool) -> None:
        log.info("rebuilding item index: %d items, approximate=%s", len(self), approximate)
        self.approximate = approximate
        self._index = self._new_index(approximate=approximate)
        self._id_row[:] = -1
        self._current.clear()
        self._tombstones = 0
        rows = list(self._vectors)
        if not rows:
            return
        ids = self._new_ids(rows)
        self._index.add_with_ids(np.stack([self._vectors[r] for r in rows]), ids)

    # ------------------------------------------------------------------ search

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows by inner product for each query row, in one faiss call."""
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        n = queries.shape[0]
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        rows = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or k <= 0 or not self._vectors:
            return scores, rows
        fetch = min(k + self._tombstones, self._index.ntotal)
        faiss.omp_set_num_threads(1 if n < _PARALLEL_MIN_QUERIES else _MAX_THREADS)
        found_scores, found_ids = self._index.search(queries, fetch)
        found_rows = np.where(found_ids >= 0, self._id_row[np.maximum(found_ids, 0)], -1)
        if not self._tombstones:
            width = min(k, fetch)
            rows[:, :width] = found_rows[:, :width]
            scores[:, :width] = np.where(
                found_rows[:, :width] >= 0, found_scores[:, :width], -np.inf
            )
            return scores, rows
        for q in range(n):
            valid = found_rows[q] >= 0
            kept = found_rows[q][valid][:k]
            rows[q, : len(kept)] = kept
            scores[q, : len(kept)] = found_scores[q][valid][:k]
        return scores, rows
