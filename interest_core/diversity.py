"""Maximal marginal relevance (MMR) re-ranking for diversity."""

from __future__ import annotations

import numpy as np

__all__ = ["mmr"]


def mmr(relevance: np.ndarray, embeddings: np.ndarray, k: int, mmr_lambda: float) -> list[int]:
    """Indices of ``k`` items picked greedily by ``lambda * rel - (1 - lambda) * max cos``
    to those already picked. ``relevance`` is min-max scaled to [0, 1] first so it is
    comparable with cosine; ``mmr_lambda`` 1.0 keeps the relevance order."""
    n = len(relevance)
    k = min(k, n)
    order = np.argsort(-relevance, kind="stable")
    if mmr_lambda >= 1.0 or k <= 1:
        return order[:k].tolist()
    pool = order[: max(3 * k, k + 10)]
    rel = relevance[pool].astype(np.float64)
    spread = rel.max() - rel.min()
    rel = (rel - rel.min()) / spread if spread > 1e-12 else np.ones_like(rel)
    vectors = embeddings[pool]
    sims = vectors @ vectors.T
    picked: list[int] = [0]
    max_sim = sims[0].astype(np.float64).copy()
    chosen = np.zeros(len(pool), dtype=bool)
    chosen[0] = True
    while len(picked) < k:
        gain = mmr_lambda * rel - (1.0 - mmr_lambda) * max_sim
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        chosen[best] = True
        np.maximum(max_sim, sims[best], out=max_sim)
    return pool[picked].tolist()
