"""One relevance score from several candidate features, with weights learned online.

``score = weights . features``. When a user acts positively on an item, a pairwise
logistic (BPR) step pushes that item's features above those of the items the user was
shown (or would have been): ``w += lr * mean_j sigmoid(-w.(f_i - f_j)) (f_i - f_j)``,
with weights kept non-negative (every feature is built so that higher means more
relevant) and their total fixed: a ranking does not change when all weights scale, so
only their ratios are learned, and the step cannot shrink every weight to zero when the
shown items out-score the acted-on one on every feature. Initial weights are neutral
(all equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["FusionWeights"]


class FusionWeights:
    """Learned linear weights over named features; only ``enabled`` features count."""

    def __init__(
        self,
        names: Sequence[str],
        enabled: Sequence[str] | None = None,
        *,
        learning_rate: float = 0.05,
    ) -> None:
        self.names = tuple(names)
        on = set(self.names if enabled is None else enabled)
        self.mask = np.array([name in on for name in self.names], dtype=np.float64)
        self.weights = self.mask.copy()
        self.learning_rate = learning_rate
        self.total = float(self.mask.sum())
        self.updates = 0

    def score(self, features: np.ndarray) -> np.ndarray:
        """Fused scores, ``features`` of shape ``(n, n_features)``."""
        return features @ self.weights

    def update(self, positive: np.ndarray, negatives: np.ndarray) -> float:
        """One BPR step; returns the mean pairwise loss before the step (nats)."""
        if negatives.size == 0 or self.mask.sum() <= 1:
            return 0.0
        diff = (positive[None, :] - negatives) * self.mask
        margin = diff @ self.weights
        loss = float(np.mean(np.logaddexp(0.0, -margin)))
        pull = 1.0 / (1.0 + np.exp(np.clip(margin, -30, 30)))  # sigmoid(-margin)
        gradient = (pull[:, None] * diff).mean(axis=0)
        stepped = np.maximum(self.weights + self.learning_rate * gradient, 0.0) * self.mask
        mass = stepped.sum()
        if mass > 1e-12:
            self.weights = stepped * (self.total / mass)
        self.updates += 1
        return loss

    def as_dict(self) -> dict[str, float]:
        """Current weights by feature name (disabled features are 0)."""
        return {name: float(w) for name, w in zip(self.names, self.weights, strict=True)}
