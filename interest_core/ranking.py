"""Ranking a user's candidates: features, fused score, diversity, reasons, fusion step.

Each candidate gets one value per feature (:data:`~interest_core.strategies.FEATURES`):
cosine to the best interest slot, to the short-term vector (times its freshness), to the
long-term vector, the co-occurrence score, trending and popularity. Each feature is
divided by its largest magnitude among the user's candidates, so the learned fusion
weights compare sources, not the sources' units. The fused score orders the list, MMR
re-ranks it for diversity, and the feature that contributed most explains each item.

The :class:`Ranker` remembers each user's last ranking (bounded LRU): when the user then
acts on one of those candidates, :meth:`Ranker.learn` takes one listwise step of the
fusion weights (softmax likelihood of that item among them); the step's gradient is
returned so an engine sharing its lessons with the fleet can send it on.
"""

from __future__ import annotations

import numpy as np

from interest_core.candidates import Candidates, UserView
from interest_core.catalog import Catalog
from interest_core.diversity import mmr
from interest_core.fusion import FusionWeights
from interest_core.interest import UserState
from interest_core.labels import LabelModel
from interest_core.reasons import Anchors, content_reason
from interest_core.records import RecommendedItem
from interest_core.strategies import FEATURES

__all__ = ["POPULAR_REASON", "Ranker"]

POPULAR_REASON = "popular now"
_RANKED_KEPT = 100  # best-ranked candidates remembered per user for the fusion update
_RANKINGS_KEPT = 20_000  # users whose last ranking is remembered: <= 8.5 MB (LRU)
_ANCHOR_LABELS = 3  # top interest labels a content reason may name


class Ranker:
    """Scores, orders, diversifies and explains candidates; learns the fusion weights.

    ``candidates`` supplies views and the co-occurrence and trending scores; ``fusion``
    holds the weights (learned online when more than one feature is on); ``labels``
    names the user's interests in reasons; ``mmr_lambda`` trades relevance (1.0) against
    diversity (0.0).
    """

    def __init__(
        self,
        catalog: Catalog,
        candidates: Candidates,
        fusion: FusionWeights,
        labels: LabelModel,
        mmr_lambda: float,
    ) -> None:
        self.catalog = catalog
        self.candidates = candidates
        self.fusion = fusion
        self.labels = labels
        self.mmr_lambda = mmr_lambda
        self.features = candidates.features
        # Per user, from the last ranking: best candidates and the feature scales used.
        self._shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def forget(self, user_id: str) -> None:
        """Drop the user's remembered ranking."""
        self._shown.pop(user_id, None)

    def forget_all(self) -> None:
        """Drop every remembered ranking (their features came from another item space)."""
        self._shown.clear()

    def feature_matrix(
        self, view: UserView, rows: np.ndarray, trend: tuple[np.ndarray, float]
    ) -> np.ndarray:
        """``(len(rows), len(FEATURES))``: cosine to the best slot, to the short-term
        vector (times its freshness), to the long-term vector; co-occurrence score over
        the user's summed history weight; trending over the top trending score."""
        embeddings = self.candidates.space.vectors[rows]
        features = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
        enabled = self.features
        if "slot" in enabled and len(view.slot_dirs):
            features[:, 0] = (embeddings @ view.slot_dirs.T).max(axis=1)
        if "short_term" in enabled and view.short_dir is not None:
            features[:, 1] = embeddings @ view.short_dir
        if "long_term" in enabled and view.long_dir is not None:
            features[:, 2] = embeddings @ view.long_dir
        if "cooccurrence" in enabled and view.history_rows:
            scores = self.candidates.cooccurrence.scores_at(view, rows)
            features[:, 3] = scores / view.cooc_scale
        if "trending" in enabled:
            features[:, 4] = self.candidates.trending.feature(trend, rows)
        if "popularity" in enabled:
            features[:, 5] = self.candidates.popularity.feature(
                self.candidates.popularity.dense(), rows
            )
        return features

    def rank(
        self,
        user_id: str,
        view: UserView,
        rows: np.ndarray,
        k: int,
        fill: np.ndarray,
        trend: tuple[np.ndarray, float],
    ) -> list[RecommendedItem]:
        """Fuse, re-rank with MMR, explain; top up from ``fill`` (allowed trending rows)."""
        items: list[RecommendedItem] = []
        picked: list[int] = []
        if len(rows):
            features = self.feature_matrix(view, rows, trend)
            scales = np.maximum(np.abs(features).max(axis=0), 1e-9)
            features /= scales
            contributions = features * self.fusion.weights
            fused = contributions.sum(axis=1)
            self._remember(user_id, rows[np.argsort(-fused, kind="stable")], scales)
            vectors = self.candidates.space.vectors[rows]
            for i in mmr(fused, vectors, k, self.mmr_lambda):
                row = int(rows[i])
                picked.append(row)
                reason = self.reason(view, row, contributions[i])
                items.append(RecommendedItem(self.catalog.item_ids[row], float(fused[i]), reason))
        if len(items) < k:
            taken = set(picked)
            for row in fill.tolist():
                if row not in taken:
                    items.append(RecommendedItem(self.catalog.item_ids[row], 0.0, POPULAR_REASON))
                    if len(items) == k:
                        break
        return items

    def _remember(self, user_id: str, ordered: np.ndarray, scales: np.ndarray) -> None:
        """Keep the user's best-ranked rows and feature scales for the next fusion step."""
        self._shown.pop(user_id, None)
        self._shown[user_id] = (ordered[:_RANKED_KEPT].astype(np.int32), scales)
        if len(self._shown) > _RANKINGS_KEPT:
            del self._shown[next(iter(self._shown))]

    def reason(self, view: UserView, row: int, contribution: np.ndarray) -> str:
        """A sentence a person understands, from the feature that contributed most."""
        if not contribution.size or contribution.max() <= 0.0:
            return POPULAR_REASON
        best = FEATURES[int(np.argmax(contribution))]
        if best in ("trending", "popularity"):
            return POPULAR_REASON
        if best == "cooccurrence":
            return self.candidates.cooccurrence.reason(view, row)
        if view.anchors is None:
            top = [] if view.state is None else self.labels.top(view.state, _ANCHOR_LABELS)
            view.anchors = Anchors.of(view.state, self.catalog, [label for label, _ in top])
        return content_reason(view.anchors, self.catalog, row)

    def teaches(self, user_id: str, row: int) -> bool:
        """True when acting on ``row`` now would make :meth:`learn` take a step."""
        remembered = self._shown.get(user_id)
        return remembered is not None and bool((remembered[0] == row).any())

    def learn(self, state: UserState, row: int) -> np.ndarray | None:
        """Fusion step when the user acts on one of their last ranked candidates: the
        softmax likelihood of that item among all of them, with features from the state
        before this event (scaled as in that ranking). An item outside the candidates
        teaches the ranker nothing it could have ordered. One ranking teaches one step
        (the first of its candidates acted on); the next ranking is a new lesson."""
        remembered = self._shown.get(state.user_id)
        if remembered is None:
            return None
        ranked, scales = remembered
        position = np.flatnonzero(ranked == row)
        if position.size == 0:
            return None
        del self._shown[state.user_id]
        candidates = ranked[self.catalog.alive[ranked]]
        view = self.candidates.view(state, self.candidates.blocked([]), 0)
        features = self.feature_matrix(view, candidates, self.candidates.trending.dense())
        step = self.fusion.listwise_gradient(
            features / scales, int(np.flatnonzero(candidates == row)[0])
        )
        if step is None:
            return None
        self.fusion.apply_gradient(step[0])
        return step[0]
