"""One relevance score from several candidate features, with weights learned online.

``score = weights . features``. When a user acts positively on an item, a pairwise
logistic (BPR) step pushes that item's features above those of the items the user was
shown (or would have been): ``w += lr * mean_j sigmoid(-w.(f_i - f_j)) (f_i - f_j)``,
with weights kept non-negative (every feature is built so that higher means more
relevant) and their total fixed: a ranking does not change when all weights scale, so
only their ratios are learned, and the step cannot shrink every weight to zero when the
shown items out-score the acted-on one on every feature. Initial weights are neutral
(all equal). Ranking uses an exponential moving average of the SGD iterates
(``averaging`` per update), which is far steadier than the last iterate.
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
        averaging: float = 0.01,
        initial: Sequence[float] | None = None,
    ) -> None:
        self.names = tuple(names)
        on = set(self.names if enabled is None else enabled)
        self.mask = np.array([name in on for name in self.names], dtype=np.float64)
        start = self.mask.copy() if initial is None else np.asarray(initial, float) * self.mask
        self.total = float(self.mask.sum())
        if start.sum() <= 0.0:
            raise ValueError("initial fusion weights must have a positive enabled sum")
        self.iterate = start * (self.total / start.sum())
        self.weights = self.iterate.copy()  # the average, used for ranking
        self.learning_rate = learning_rate
        self.averaging = averaging
        self.updates = 0

    def score(self, features: np.ndarray) -> np.ndarray:
        """Fused scores, ``features`` of shape ``(n, n_features)``."""
        return features @ self.weights

    def update(self, positive: np.ndarray, negatives: np.ndarray) -> float:
        """One BPR step; returns the mean pairwise loss before the step (nats)."""
        if negatives.size == 0 or self.mask.sum() <= 1:
            return 0.0
        diff = (positive[None, :] - negatives) * self.mask
        margin = diff @ self.iterate
        loss = float(np.mean(np.logaddexp(0.0, -margin)))
        pull = 1.0 / (1.0 + np.exp(np.clip(margin, -30, 30)))  # sigmoid(-margin)
        gradient = (pull[:, None] * diff).mean(axis=0)
        stepped = np.maximum(self.iterate + self.learning_rate * gradient, 0.0) * self.mask
        mass = stepped.sum()
        if mass > 1e-12:
            self.iterate = stepped * (self.total / mass)
        self.weights = (1.0 - self.averaging) * self.weights + self.averaging * self.iterate
        self.updates += 1
        return loss

    def as_dict(self) -> dict[str, float]:
        """Current weights by feature name (disabled features are 0)."""
        return {name: float(w) for name, w in zip(self.names, self.weights, strict=True)}
