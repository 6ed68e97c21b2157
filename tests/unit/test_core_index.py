"""The faiss item index: exact and HNSW, upsert, delete, tombstones, batched search."""

from __future__ import annotations

import numpy as np
import pytest

from interest_core.index import ItemIndex


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("approximate", [False, True])
def test_upsert_search_delete(approximate: bool) -> None:
    vectors = unit_rows(300, 16)
    index = ItemIndex(16, exact_max_items=100 if approximate else 10_000)
    index.upsert(list(range(300)), vectors)
    assert index.approximate is approximate and len(index) == 300
    scores, rows = index.search(vectors[:5], 3)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    index.delete([0, 1])
    _, rows = index.search(vectors[:2], 10)
    assert 0 not in rows and 1 not in rows
    index.upsert([2], vectors[7:8])  # row 2 now looks like row 7
    _, rows = index.search(vectors[7:8], 2)
    assert set(rows[0].tolist()) == {2, 7}
    _, rows = index.search(vectors[2:3], 1)
    assert rows[0, 0] != 2


def test_hnsw_tombstones_trigger_rebuild() -> None:
    vectors = unit_rows(2000, 8, seed=1)
    index = ItemIndex(8, exact_max_items=1000)
    index.upsert(list(range(2000)), vectors)
    index.delete(list(range(400)))
    assert index.tombstones == 400
    index.delete(list(range(400, 600)))  # > a quarter of the live items: rebuilt
    assert index.tombstones == 0 and len(index) == 1400
    _, rows = index.search(vectors[:600], 5)
    assert (rows >= 600).all()


def test_empty_and_short_results() -> None:
    index = ItemIndex(4)
    scores, rows = index.search(np.ones((2, 4), dtype=np.float32), 3)
    assert (rows == -1).all() and np.isneginf(scores).all()
    index.upsert([5], unit_rows(1, 4))
    _, rows = index.search(np.ones((1, 4), dtype=np.float32), 3)
    assert rows[0].tolist() == [5, -1, -1]
