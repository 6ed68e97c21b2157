"""MMR re-ranking: relevance order at lambda 1, near-duplicates pushed down below it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.diversity import _greedy, greedy_reference, mmr


def _unit(rows: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_lambda_one_keeps_the_relevance_order() -> None:
    relevance = np.array([0.2, 0.9, 0.5, 0.7])
    embeddings = _unit([[1, 0], [1, 0], [1, 0], [0, 1]])
    assert mmr(relevance, embeddings, 3, 1.0) == [1, 3, 2]


def test_a_near_duplicate_of_the_top_item_is_pushed_down() -> None:
    # Items 0 and 1 are the same direction; 2 is different and a little less relevant.
    relevance = np.array([1.0, 0.95, 0.9])
    embeddings = _unit([[1, 0], [1, 0.01], [0, 1]])
    assert mmr(relevance, embeddings, 3, 1.0) == [0, 1, 2]
    assert mmr(relevance, embeddings, 3, 0.5) == [0, 2, 1]


def test_k_larger_than_the_candidates() -> None:
    relevance = np.array([0.3, 0.1])
    assert sorted(mmr(relevance, _unit([[1, 0], [0, 1]]), 10, 0.8)) == [0, 1]
    assert mmr(np.zeros(0), np.zeros((0, 2), dtype=np.float32), 5, 0.8) == []


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 12),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_picks_are_distinct_and_start_with_the_most_relevant(
    n: int, k: int, lam: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    relevance = rng.normal(size=n)
    embeddings = _unit(rng.normal(size=(n, 8)).tolist())
    picked = mmr(relevance, embeddings, k, lam)
    assert len(picked) == min(k, n) == len(set(picked))
    assert picked[0] == int(np.argsort(-relevance, kind="stable")[0])


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 12),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_the_compiled_picks_are_the_reference_picks(
    n: int, k: int, lam: float, seed: int, ties: bool
) -> None:
    """The compiled greedy loop picks exactly what the plain numpy steps pick, ties in
    relevance and duplicate vectors included; reading the pool's vectors from a larger
    matrix by ``rows`` changes nothing."""
    rng = np.random.default_rng(seed)
    relevance = rng.integers(0, 3, size=n).astype(float) if ties else rng.normal(size=n)
    embeddings = _unit((rng.integers(0, 2, size=(n, 4)) + 1e-3).tolist())
    rel = relevance.astype(np.float64)
    sims = embeddings @ embeddings.T
    steps = min(k, n)
    assert (
        _greedy(rel, sims, steps, lam).tolist() == greedy_reference(rel, sims, steps, lam).tolist()
    )
    picked = mmr(relevance, embeddings, k, lam)
    catalog = np.vstack([_unit(rng.normal(size=(5, 4)).tolist()), embeddings])
    assert mmr(relevance, catalog, k, lam, np.arange(5, 5 + n)) == picked
