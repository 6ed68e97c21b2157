"""One relevance score from several candidate features, with weights learned online.

``score = weights . features``. When a user acts positively on one of the candidates
they were ranked, the engine takes a step on the softmax likelihood of that item among
all the ranked candidates (:meth:`FusionWeights.update_listwise`: ``w += lr * (f_pos -
E_softmax[f])``); a pairwise logistic (BPR) step against chosen negatives is also
available (:meth:`FusionWeights.update`). Weights stay non-negative (every feature is
built so that higher means more relevant) and their total stays fixed: a ranking does
not change when all weights scale, so only their ratios are learned and no step can
shrink every weight to zero. Ranking uses an exponential moving average of the
iterates (``averaging`` per update), far steadier than the last iterate. Initial
weights are neutral (equal, or as given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest_core.settings import RecommendSettings

__all__ = ["FusionWeights"]


class FusionWeights:
    """Learned linear weights over named features; only ``enabled`` features count."""

    def __init__(
        self,
        names: Sequence[str],
        enabled: Sequence[str] | None = None,
        *,
        learning_rate: float = RecommendSettings.fusion_learning_rate,
        averaging: float = 0.01,
        initial: Sequence[float] | None = None,
    ) -> None:
        self.names = tuple(names)
        on = set(self.names if enabled is None else enabled)
        self.mask = np.array([name in on for name in self.names], dtype=np.float64)
        #: Whether a step can learn anything (two or more features enabled; fixed).
        self.learns = int(self.mask.sum()) > 1
        start = self.mask.copy() if initial is None else np.asarray(initial, float) * self.mask
        # Features that start at 0 (e.g. ``adapted`` before any layer exists) do not
        # count in the total: the others then learn exactly as without them.
        self.total = float((start > 0.0).sum())
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

    def update_listwise(self, features: np.ndarray, positive: int) -> float:
        """One step of the softmax likelihood of the acted-on candidate ``positive`` among
        all ranked candidates ``features`` ``(n, n_features)``: ``w += lr * (f_pos -
        E_softmax[f])``. Every candidate counts by how likely the model found it, so the
        step is not biased by which candidates were sampled. Returns the loss (nats)."""
        step = self.listwise_gradient(features, positive)
        if step is None:
            return 0.0
        gradient, loss = step
        self.apply_gradient(gradient)
        return loss

    def listwise_gradient(
        self, features: np.ndarray, positive: int
    ) -> tuple[np.ndarray, float] | None:
        """The ascent direction ``f_pos - E_softmax[f]`` (masked) of
        :meth:`update_listwise` at the current iterate, and the loss (nats); None when
        there is nothing to learn (one candidate, one feature). A worker sends it to the
        fleet's learner instead of stepping itself."""
        if len(features) < 2 or self.mask.sum() <= 1:
            return None
        logits = features @ self.iterate
        logits = logits - logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        loss = float(-np.log(max(probs[positive], 1e-300)))
        return (features[positive] - probs @ features) * self.mask, loss

    def apply_gradient(self, gradient: np.ndarray) -> None:
        """One projected ascent step along ``gradient`` (per feature) and the averaging:
        weights stay non-negative with a fixed total."""
        stepped = np.maximum(self.iterate + self.learning_rate * gradient * self.mask, 0.0)
        stepped *= self.mask
        mass = stepped.sum()
        if mass > 1e-12:
            self.iterate = stepped * (self.total / mass)
        self.weights = (1.0 - self.averaging) * self.weights + self.averaging * self.iterate
        self.updates += 1

    def load(
        self, weights: np.ndarray, iterate: np.ndarray | None = None, updates: int = 0
    ) -> None:
        """Take weights learned elsewhere (the fleet's, from the models topic): the
        averaged ``weights`` used for ranking and, when given, the ``iterate``. Both are
        masked and rescaled to this object's total; raises ``ValueError`` on a wrong
        length or no positive enabled mass."""
        for name, values in (("weights", weights), ("iterate", iterate)):
            if values is not None and np.shape(values) != self.mask.shape:
                raise ValueError(
                    f"{name}: {np.shape(values)} values for {len(self.names)} features"
                )
        masked = np.maximum(np.asarray(weights, dtype=np.float64), 0.0) * self.mask
        if masked.sum() <= 0.0:
            raise ValueError("fusion weights need a positive enabled sum")
        self.weights = masked * (self.total / masked.sum())
        if iterate is not None:
            start = np.maximum(np.asarray(iterate, dtype=np.float64), 0.0) * self.mask
            if start.sum() > 0.0:
                self.iterate = start * (self.total / start.sum())
        self.updates = updates

    def as_dict(self) -> dict[str, float]:
        """Current weights by feature name (disabled features are 0)."""
        return {name: float(w) for name, w in zip(self.names, self.weights, strict=True)}
