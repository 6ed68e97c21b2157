"""Ranking a user's candidates: features, fused score, diversity, reasons, fusion step.

Each candidate gets one value per feature (:data:`~interest_core.strategies.FEATURES`):
cosine to the best interest slot, to the short-term vector (times its freshness), to the
long-term vector, the co-occurrence score, trending, popularity, (the hybrid, with a
layer in use) the best cosine in the adaptation layer's space, and the co-occurrence
score without the discount of the candidate's popularity. Each feature is
divided by its largest magnitude among the user's candidates, so the learned fusion
weights compare sources, not the sources' units. The fused score orders the list, MMR
re-ranks it for diversity, and the feature that contributed most explains each item.

The :class:`Ranker` remembers each user's last ranking (bounded LRU), its best candidates
with the scaled features they were ranked with: when the user then acts on one of them,
:meth:`Ranker.learn` takes one listwise step of the fusion weights (softmax likelihood of
that item among them, on those features); the step's gradient is returned so an engine
sharing its lessons with the fleet can send it on.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from interest_core.candidates import Candidates, UserView
from interest_core.catalog import Catalog
from interest_core.diversity import mmr
from interest_core.diversity import warm_up as diversity_warm_up
from interest_core.fusion import FusionWeights
from interest_core.interest import UserState
from interest_core.labels import LabelModel
from interest_core.reasons import Anchors, content_reasons
from interest_core.records import RecommendedItem
from interest_core.settings import RecommendSettings
from interest_core.strategies import FEATURES

__all__ = ["POPULAR_REASON", "Ranker"]

POPULAR_REASON = "popular now"
_RANKED_KEPT = 100  # best-ranked candidates remembered per user for the fusion update
# Users whose last ranking is remembered (LRU): rows and float32 features, about 4.0 KB
# each with the eight features (tracemalloc), so at most about 81 MB.
_RANKINGS_KEPT = 20_000
_ANCHOR_LABELS = 3  # top interest labels a content reason may name
_CONTENT = ("slot", "short_term", "long_term")
_TASTE_PRIOR_ITEMS = 2.0  # pseudo-items of the prior share in a user's taste for new items
_COOC, _COOC_POPULAR = FEATURES.index("cooccurrence"), FEATURES.index("cooccurrence_popular")


@njit(cache=True)  # keeps the interpreter lock: see below
def _holds(rows: np.ndarray, row: int) -> bool:  # pragma: no cover - compiled
    """True when ``row`` is one of ``rows`` (a remembered ranking's): asked on every
    positive event, where ``(rows == row).any()`` cost some 1.2 us in numpy's calls.
    Compiled without ``nogil``: a call this short gains nothing from releasing the
    interpreter lock, and with it the call became where the co-occurrence thread took
    the lock (39 us a call on average, replaying the bench stream in batches of 350; the
    wait moves to other release points without it, the batch's time unchanged)."""
    for held in rows:  # noqa: SIM110 - a loop numba compiles, not a generator
        if held == row:
            return True
    return False


@functools.cache  # once per process: every ranker calls it
def _warm_up() -> None:
    """Load (or compile) :func:`_holds` before the first event asks it."""
    _holds(np.zeros(1, dtype=np.int32), 0)


class Ranker:
    """Scores, orders, diversifies and explains candidates; learns the fusion weights.

    ``candidates`` supplies views and the co-occurrence and trending scores; ``fusion``
    holds the weights (learned online when more than one feature is on); ``labels``
    names the user's interests in reasons; ``settings`` give ``mmr_lambda`` (relevance,
    1.0, against diversity, 0.0) and the places for new items (``cold_slots``,
    ``cold_item_interactions``, ``cold_taste``).
    """

    def __init__(
        self,
        catalog: Catalog,
        candidates: Candidates,
        fusion: FusionWeights,
        labels: LabelModel,
        settings: RecommendSettings,
    ) -> None:
        self.catalog = catalog
        self.candidates = candidates
        self.fusion = fusion
        self.labels = labels
        self.mmr_lambda = settings.mmr_lambda
        self.features = candidates.features
        # New items rise on little evidence: lists keep places (see :meth:`cold_places`)
        # for the best-scored candidates with fewer than ``cold_interactions`` positive
        # events so far (only where content and co-occurrence are both fused).
        both = "cooccurrence" in self.features and any(f in self.features for f in _CONTENT)
        self.cold_slots = settings.cold_slots if both else 0
        self.cold_interactions = settings.cold_item_interactions
        self.cold_taste = settings.cold_taste
        # Per user, from the last ranking: best candidates and their scaled features.
        self._shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        _warm_up()
        diversity_warm_up()  # the first ranking pays for no compiled loop

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
        the user's summed history weight; trending over the top trending score; the
        popularity score; the best adapted cosine; and ``cooccurrence_popular``, the
        co-occurrence score times ``sqrt(n_j)`` of the candidate ``j``:
        ``sum_i w_i c_ij / sqrt(n_i)`` over the history ``i`` (over the summed weight),
        the cosine without its discount of ``j``'s own popularity. ``itemknn`` ranks by
        the cosine; the hybrid learns how much of each to use."""
        embeddings = self.candidates.content_space.vectors[rows]
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
        if "adapted" in enabled and view.adapted is not None:
            features[:, 6] = self.adapted_cosine(view.adapted, rows)
        if "cooccurrence_popular" in enabled and view.history_rows:
            features[:, _COOC_POPULAR] = self.cooccurrence_popular(features[:, _COOC], rows)
        return features

    def cooccurrence_popular(self, cosine: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The co-occurrence ``cosine`` scores of ``rows`` times ``sqrt(n_j)``, ``n_j``
        the row's positive events (at least 1)."""
        out: np.ndarray = cosine * np.sqrt(np.maximum(self.positive_events(rows), 1.0))
        return out

    def positive_events(self, rows: np.ndarray) -> np.ndarray:
        """``n_j`` per row: positive events so far (the co-occurrence counts, which the
        fleet's knowledge keeps; 0 for a row never counted)."""
        counts = self.candidates.cooccurrence.knowledge.cooccurrence.counts
        n = np.zeros(len(rows), dtype=np.float64)
        inside = rows < len(counts)
        n[inside] = counts[rows[inside]]
        return n

    def adapted_cosine(
        self,
        adapted: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
        rows: np.ndarray,
    ) -> np.ndarray:
        """The best cosine (short-term times its freshness) of the user's adapted
        directions (slots, short-term, long-term) with the rows' adapted vectors."""
        items = self.candidates.space.vectors[rows]
        slots, short, long_dir = adapted
        parts = [] if not len(slots) else [(items @ slots.T).max(axis=1)]
        parts += [items @ vector for vector in (short, long_dir) if vector is not None]
        if not parts:
            return np.zeros(len(rows), dtype=np.float64)
        best: np.ndarray = np.max(parts, axis=0)
        return best

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
            self._remember(user_id, rows, features, np.argsort(-fused, kind="stable"))
            vectors = self.candidates.content_space.vectors
            chosen = mmr(fused, vectors, k, self.mmr_lambda, rows)
            if self.cold_slots:
                places = self.cold_places(view.state, k)
                chosen = self.with_cold(chosen, rows, fused, k, places)
            # The chosen items' top contributions and the features giving them, at once.
            explained = contributions[chosen]
            tops, bests = explained.max(axis=1).tolist(), explained.argmax(axis=1).tolist()
            picked = rows[chosen].tolist()
            reasons = self.reasons(view, picked, tops, bests)
            scores = fused[chosen].tolist()
            ids = self.catalog.item_ids
            items = [
                RecommendedItem(ids[row], score, reason)
                for row, score, reason in zip(picked, scores, reasons, strict=True)
            ]
        if len(items) < k:
            taken = set(picked)
            for row in fill.tolist():
                if row not in taken:
                    items.append(RecommendedItem(self.catalog.item_ids[row], 0.0, POPULAR_REASON))
                    if len(items) == k:
                        break
        return items

    def cold_rows(self, rows: np.ndarray) -> np.ndarray:
        """True per row whose item has had fewer than ``cold_interactions`` positive
        events so far."""
        out: np.ndarray = self.positive_events(rows) < self.cold_interactions
        return out

    def cold_places(self, state: UserState | None, k: int) -> int:
        """How many of ``k`` places are kept for new items: ``cold_slots``; or, with
        ``cold_taste`` > 0, ``round(k * cold_taste * share)``, where ``share`` is the
        part of the user's recent positive items that were new when taken (fewer than
        ``cold_interactions`` positive events before), smoothed toward ``cold_slots / k``
        by two items (a user with no such history gets ``round(cold_taste *
        cold_slots)``)."""
        if self.cold_taste <= 0.0:
            return self.cold_slots
        novel = taken = 0
        if state is not None:
            for item in state.recent:
                if item.weight > 0.0 and item.before >= 0:
                    taken += 1
                    novel += item.before < self.cold_interactions
        prior = self.cold_slots / k
        share = (novel + _TASTE_PRIOR_ITEMS * prior) / (taken + _TASTE_PRIOR_ITEMS)
        return min(k, round(k * self.cold_taste * share))

    def with_cold(
        self, chosen: list[int], rows: np.ndarray, score: np.ndarray, k: int, places: int
    ) -> list[int]:
        """``chosen`` (indices into ``rows``, best first) with its last places given to
        the cold candidates of best ``score`` (> 0) until ``places`` of the ``k`` are
        cold; the warm items they displace are the list's lowest."""
        cold = self.cold_rows(rows)
        have = int(cold[chosen].sum()) if chosen else 0
        need = min(places, k) - have
        if need <= 0:
            return chosen
        taken = np.zeros(len(rows), dtype=bool)
        taken[chosen] = True
        eligible = np.flatnonzero(cold & ~taken & (score > 0.0))
        if not eligible.size:
            return chosen
        best = eligible[np.argsort(-score[eligible], kind="stable")[:need]].tolist()
        keep = list(chosen)
        room = k - len(keep)
        drop = max(0, len(best) - room)
        if drop:
            warm_at = [p for p, i in enumerate(keep) if not cold[i]]
            for p in sorted(warm_at[-drop:], reverse=True):
                del keep[p]
        return keep + best[: k - len(keep)]

    def _remember(
        self, user_id: str, rows: np.ndarray, features: np.ndarray, order: np.ndarray
    ) -> None:
        """Keep the user's best-ranked rows (``order`` of ``rows``, best first) and the
        scaled features they were ranked with, for the next fusion step."""
        best = order[:_RANKED_KEPT]
        self._shown.pop(user_id, None)
        self._shown[user_id] = (rows[best].astype(np.int32), features[best].astype(np.float32))
        if len(self._shown) > _RANKINGS_KEPT:
            del self._shown[next(iter(self._shown))]

    def reason(self, view: UserView, row: int, top: float, feature: int) -> str:
        """A sentence a person understands, from the feature that contributed most:
        ``top`` is the row's largest contribution, ``feature`` its index in
        :data:`FEATURES`."""
        return self.reasons(view, [row], [top], [feature])[0]

    def reasons(
        self, view: UserView, rows: list[int], tops: list[float], features: list[int]
    ) -> list[str]:
        """:meth:`reason` of each of ``rows``: the co-occurrence ones in one compiled
        call, the content ones with one product per kind of anchor."""
        out = [POPULAR_REASON] * len(rows)
        cooc: list[int] = []
        content: list[int] = []
        for n, (top, feature) in enumerate(zip(tops, features, strict=True)):
            best = FEATURES[feature]
            if top <= 0.0 or best in ("trending", "popularity"):
                continue
            (cooc if best in ("cooccurrence", "cooccurrence_popular") else content).append(n)
        if cooc:
            said = self.candidates.cooccurrence.reasons(view, [rows[n] for n in cooc])
            for n, reason in zip(cooc, said, strict=True):
                out[n] = reason
        if content:
            if view.anchors is None:
                shown = [] if view.state is None else self.labels.top(view.state, _ANCHOR_LABELS)
                view.anchors = Anchors.of(view.state, self.catalog, [label for label, _ in shown])
            said = content_reasons(view.anchors, self.catalog, [rows[n] for n in content])
            for n, reason in zip(content, said, strict=True):
                out[n] = reason
        return out

    def teaches(self, user_id: str, row: int) -> bool:
        """True when acting on ``row`` now would make :meth:`learn` take a step."""
        remembered = self._shown.get(user_id)
        return remembered is not None and _holds(remembered[0], row)

    def learn(self, user_id: str, row: int) -> np.ndarray | None:
        """Fusion step when the user acts on one of their last ranked candidates: the
        softmax likelihood of that item among all of them, with the features they were
        ranked with (logged at the ranking, as a learning-to-rank system logs them with
        the impression: the weights are judged on what the user was shown, and a
        lesson reads no table). An item outside the candidates teaches the ranker
        nothing it could have ordered. One ranking teaches one step (the first of its
        candidates acted on); the next ranking is a new lesson."""
        remembered = self._shown.get(user_id)
        if remembered is None:
            return None
        ranked, features = remembered
        if not (ranked == row).any():
            return None
        del self._shown[user_id]
        alive = self.catalog.alive[ranked]
        candidates = ranked[alive]
        step = self.fusion.listwise_gradient(
            features[alive].astype(np.float64), int(np.flatnonzero(candidates == row)[0])
        )
        if step is None:
            return None
        self.fusion.apply_gradient(step[0])
        return step[0]
