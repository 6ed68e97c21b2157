"""Co-occurrence counts: sparse = dense scores, position decay, pruning, removal."""

from __future__ import annotations

import numpy as np

from interest_core.cooccurrence import CoOccurrence


def _random(max_neighbours: int = 4) -> CoOccurrence:
    rng = np.random.default_rng(0)
    co = CoOccurrence(max_neighbours=max_neighbours)
    for _ in range(400):
        co.add(int(rng.integers(40)), [int(x) for x in rng.integers(40, size=6)], decay=0.85)
    return co


def test_sparse_scores_match_the_dense_scores() -> None:
    co = _random()
    history, weights = [3, 7, 11], [1.0, 0.5, 0.25]
    rows, scores = co.sparse_scores(history, weights)
    dense = np.zeros(40)
    dense[rows] = scores
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_allclose(dense, co.scores(history, weights, 40))
    assert co.sparse_scores([], [])[0].size == 0


def test_nearer_history_items_pair_more_strongly() -> None:
    co = CoOccurrence()
    co.add(0, [1, 2, 3], decay=0.5)  # newest first: 1 counts 1, 2 counts 0.5, 3 0.25
    assert co.similarity(0, 1) > co.similarity(0, 2) > co.similarity(0, 3) > 0.0
    assert co.similarity(1, 0) == co.similarity(0, 1)
    plain = CoOccurrence()
    plain.add(0, [1, 2, 3, 1])  # duplicates count once
    assert plain.similarity(0, 1) == plain.similarity(0, 3) == 1.0


def test_neighbours_stay_bounded_and_removal_forgets_pairs() -> None:
    co = _random(max_neighbours=4)
    for row in range(40):
        assert len(co.neighbours(row)[0]) <= 8
    rows, _ = co.neighbours(5)
    assert len(rows)
    co.remove(5)
    assert co.neighbours(5)[0].size == 0
    for row in range(40):
        assert 5 not in co.neighbours(row)[0].tolist()
        assert co.similarity(row, 5) == 0.0
