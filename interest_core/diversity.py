"""Maximal marginal relevance (MMR) re-ranking for diversity."""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

__all__ = ["greedy_reference", "mmr", "warm_up"]


def mmr(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    mmr_lambda: float,
    rows: np.ndarray | None = None,
) -> list[int]:
    """Indices of ``k`` items picked greedily by ``lambda * rel - (1 - lambda) * max cos``
    to those already picked. ``relevance`` is min-max scaled to [0, 1] first so it is
    comparable with cosine; ``mmr_lambda`` 1.0 keeps the relevance order.

    ``embeddings`` holds the items' vectors in the order of ``relevance``; or, with
    ``rows`` (one per item), a larger matrix (the catalog's) whose row ``rows[i]`` is
    item ``i``'s: only the pool's (``max(3k, k + 10)`` most relevant) are read then.
    The greedy loop is compiled; it makes the same floating-point steps as
    :func:`greedy_reference`, so the picks are identical."""
    n = len(relevance)
    k = min(k, n)
    order = np.argsort(-relevance, kind="stable")
    if mmr_lambda >= 1.0 or k <= 1:
        return order[:k].tolist()
    pool = order[: max(3 * k, k + 10)]
    rel = relevance[pool].astype(np.float64)
    spread = rel.max() - rel.min()
    rel = (rel - rel.min()) / spread if spread > 1e-12 else np.ones_like(rel)
    vectors = embeddings[pool] if rows is None else embeddings[rows[pool]]
    return pool[_greedy(rel, vectors @ vectors.T, k, mmr_lambda)].tolist()


def greedy_reference(rel: np.ndarray, sims: np.ndarray, k: int, mmr_lambda: float) -> np.ndarray:
    """The greedy loop of :func:`mmr` in plain numpy, one array operation per step (the
    reference the compiled loop is tested against): positions in the pool, position 0
    first, then the unpicked one of highest gain (``np.argmax``: the first of equals)."""
    picked: list[int] = [0]
    max_sim = sims[0].astype(np.float64).copy()
    chosen = np.zeros(len(rel), dtype=bool)
    chosen[0] = True
    while len(picked) < k:
        gain = mmr_lambda * rel - (1.0 - mmr_lambda) * max_sim
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        chosen[best] = True
        np.maximum(max_sim, sims[best], out=max_sim)
    return np.asarray(picked, dtype=np.int64)


@njit(cache=True, nogil=True)
def _greedy(rel: np.ndarray, sims: np.ndarray, k: int, mmr_lambda: float) -> np.ndarray:
    """:func:`greedy_reference`, compiled: the same steps in loops."""
    n = rel.shape[0]
    picked = np.empty(k, dtype=np.int64)
    picked[0] = 0
    chosen = np.zeros(n, dtype=np.bool_)
    chosen[0] = True
    max_sim = np.empty(n, dtype=np.float64)
    for j in range(n):
        max_sim[j] = np.float64(sims[0, j])
    keep, spread = mmr_lambda, 1.0 - mmr_lambda
    for step in range(1, k):
        best = -1
        best_gain = 0.0
        for j in range(n):
            if chosen[j]:
                continue
            gain = keep * rel[j] - spread * max_sim[j]
            if best < 0 or gain > best_gain:
                best, best_gain = j, gain
        picked[step] = best
        chosen[best] = True
        for j in range(n):
            s = np.float64(sims[best, j])
            if s > max_sim[j]:
                max_sim[j] = s
    return picked


@functools.cache  # once per process: every engine calls it
def warm_up() -> None:
    """Load (or compile) the greedy loop, so that the first ranking does not pay for it."""
    mmr(np.array([0.3, 0.2, 0.1]), np.eye(3, dtype=np.float32), 2, 0.5)
