"""Where a user's candidate items come from: one small source per kind of evidence.

A :class:`UserView` is one user at ranking time (content directions, recent positive
history, the rows they may not be shown). Each source reads one thing and has one job:

- :class:`ContentSource` — items near the user's content vectors, from the item index
  (one batched search for a whole micro-batch of users);
- :class:`CooccurrenceSource` — items often acted on next to the user's recent items;
- :class:`TrendingSource` — items with the most decayed interaction weight now
  (trending on a short horizon, popularity on the long one).

The co-occurrence and trending sources read an injected :class:`ItemKnowledge`; the
content source reads the catalog's embeddings and the item index. :class:`Candidates`
builds the views and unites the sources' rows per user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from interest_core.adapter import ItemSpace
from interest_core.catalog import Catalog
from interest_core.fusion import FusionWeights
from interest_core.history import HistoryWindows
from interest_core.index import ItemIndex
from interest_core.interest import InterestModel, UserState
from interest_core.knowledge import ItemKnowledge
from interest_core.reasons import Anchors, cooccurrence_reasons
from interest_core.settings import RecommendSettings
from interest_core.strategies import CONTENT_FEATURES

__all__ = [
    "Candidates",
    "Clock",
    "ContentSource",
    "CooccurrenceSource",
    "TrendingSource",
    "UserView",
    "sorted_unique",
    "top_rows",
    "top_sparse",
]

_MAX_OVERFETCH = 200  # extra index results fetched per query vector to survive exclusions
# Up to this many query vectors, one matrix-vector product each beats one single-threaded
# OpenBLAS matrix product (5 vectors x 9,125 items x 256 dims: 0.9 ms vs 1.7 ms).
_GEMV_MAX_VECTORS = 8


@dataclass
class Clock:
    """The engine's clock: the newest event time seen (unix seconds), the clock of all
    decay, and the count of events applied (a cache key for scores that depend on both)."""

    now_ts: float = 0.0
    events_seen: int = 0


@dataclass
class UserView:
    """One user at ranking time: content directions, recent history, exclusions.

    ``blocked`` is a bool per catalog row (dead or excluded for this user);
    ``n_excluded`` counts the excluded ids (the index over-fetches by it). The
    co-occurrence scores and the reason anchors are filled lazily, once per view.
    """

    state: UserState | None
    slot_dirs: np.ndarray
    short_dir: np.ndarray | None
    long_dir: np.ndarray | None
    history_rows: list[int]
    history_weights: list[float]
    blocked: np.ndarray
    n_excluded: int
    cooc_rows: np.ndarray | None = None  # sorted rows with a co-occurrence score
    cooc_scores: np.ndarray | None = None
    cooc_scale: float = 1.0
    anchors: Anchors | None = None
    #: The content directions in the layer's space (slots, short, long) when they are
    #: a feature of their own (the hybrid) and a layer is in use; else None.
    adapted: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None


def sorted_unique(rows: np.ndarray) -> np.ndarray:
    """``np.unique(rows)`` (sorted, distinct) by a sort and a comparison with the
    neighbour: about a quarter of ``np.unique``'s time on a user's few hundred candidate
    rows, where its hashing path costs most."""
    if len(rows) < 2:
        return rows.copy()
    ordered = np.sort(rows)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def top_sparse(rows: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """``rows`` of the ``count`` largest positive ``scores``, best first (ties by row)."""
    positive = scores > 0.0
    rows, scores = rows[positive], scores[positive]
    if len(rows) > count:
        keep = np.argpartition(-scores, count - 1)[:count]
        rows, scores = rows[keep], scores[keep]
    return rows[np.lexsort((rows, -scores))].astype(np.int64)


def top_rows(dense: np.ndarray, count: int) -> np.ndarray:
    """Rows of the ``count`` largest positive values, best first (ties by row)."""
    positive = int(np.count_nonzero(dense > 0.0))
    take = min(positive, count)
    if take <= 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-dense, take - 1)[:take] if take < len(dense) else np.arange(len(dense))
    return top[np.lexsort((top, -dense[top]))].astype(np.int64)


class ContentSource:
    """Items near the user's content vectors (best slot, short-term, long-term).

    Reads the item vectors of ``space`` (the catalog's, adapted when a layer is in use)
    and the item index (raw vectors: an approximate search pulls the adapted queries back
    by ``W^T``); ``features`` says which content vectors count, ``fusion`` supplies the
    current weights of the three content features (the exact path ranks by the fused
    content score), ``budget`` is rows per user.
    """

    def __init__(
        self,
        catalog: Catalog,
        index: ItemIndex,
        features: Sequence[str],
        fusion: FusionWeights,
        budget: int,
        space: ItemSpace,
    ) -> None:
        self.catalog = catalog
        self.space = space
        self.index = index
        self.features = tuple(features)
        self.fusion = fusion
        self.budget = budget

    def candidates(self, views: Sequence[UserView]) -> list[np.ndarray]:
        """Candidate rows per view, from ONE batched index search (or product)."""
        out = [np.empty(0, dtype=np.int64) for _ in views]
        if not (set(CONTENT_FEATURES) & set(self.features)) or not len(self.index):
            return out
        vectors: list[np.ndarray] = []
        owners: list[int] = []
        kinds: list[int] = []  # the vector's feature column: 0 slot, 1 short, 2 long
        for i, view in enumerate(views):
            for kind, vector in self._query_vectors(view):
                if np.any(vector):
                    vectors.append(vector)
                    owners.append(i)
                    kinds.append(kind)
        if not vectors:
            return out
        matrix = np.stack(vectors)
        if not self.index.approximate:
            return self._exact(views, matrix, owners, kinds)
        picked: list[list[np.ndarray]] = [[] for _ in views]
        overfetch = min(max(v.n_excluded for v in views), _MAX_OVERFETCH)
        # (W q) . (W v) = (W^T W q) . v: the raw index answers adapted queries up to the
        # items' norms under W; the ranker re-scores the candidates exactly.
        queries = self.space.adapter.pull_back(matrix)
        _, found = self.index.search(queries, self.budget + overfetch)
        for owner, rows in zip(owners, found, strict=True):
            rows = rows[rows >= 0]
            rows = rows[~views[owner].blocked[rows]]
            picked[owner].append(rows[: self.budget])
        return [np.concatenate(p) if p else o for p, o in zip(picked, out, strict=True)]

    def _query_vectors(self, view: UserView) -> list[tuple[int, np.ndarray]]:
        """The view's content vectors with their feature column (0 slot, 1 short, 2 long)."""
        parts: list[tuple[int, np.ndarray]] = []
        if "slot" in self.features:
            parts.extend((0, d) for d in view.slot_dirs)
        if "short_term" in self.features and view.short_dir is not None:
            parts.append((1, view.short_dir))
        if "long_term" in self.features and view.long_dir is not None:
            parts.append((2, view.long_dir))
        return parts

    def _exact(
        self,
        views: Sequence[UserView],
        matrix: np.ndarray,
        owners: list[int],
        kinds: list[int],
    ) -> list[np.ndarray]:
        """Exact content candidates: one product of every query vector with the catalog
        (dead rows are zero), then per user the ``budget`` allowed rows with the best
        content part of the fused score (best slot, short-term, long-term cosine, each
        over its largest magnitude, times the fusion weights): the items the ranker
        itself would put first on content, not ``budget`` per vector."""
        width = self.catalog.rows_allocated
        embeddings = self.space.vectors[:width]
        if len(matrix) <= _GEMV_MAX_VECTORS:  # memory-bound: one pass per vector is faster
            products = np.stack([embeddings @ vector for vector in matrix], axis=1)
        else:
            products = embeddings @ matrix.T  # (width, n_vectors)
        weights = np.maximum(self.fusion.weights[:3], 1e-3)
        columns: list[list[list[int]]] = [[[], [], []] for _ in views]
        for column, (owner, kind) in enumerate(zip(owners, kinds, strict=True)):
            columns[owner][kind].append(column)
        out: list[np.ndarray] = []
        take = min(self.budget, width)
        for view, by_kind in zip(views, columns, strict=True):
            score = np.zeros(width, dtype=np.float32)
            for kind, cols in enumerate(by_kind):
                if not cols:
                    continue
                feature = products[:, cols[0]] if len(cols) == 1 else products[:, cols].max(1)
                scale = max(float(np.abs(feature).max()), 1e-9)
                score += np.float32(weights[kind] / scale) * feature
            if not any(by_kind):
                out.append(np.empty(0, dtype=np.int64))
                continue
            score[view.blocked] = -np.inf
            top = np.argpartition(-score, take - 1)[:take] if take < width else np.arange(width)
            top = top[np.isfinite(score[top])]
            out.append(top[np.argsort(-score[top], kind="stable")].astype(np.int64))
        return out


class CooccurrenceSource:
    """Items often acted on next to the user's recent positive items (item kNN).

    Reads ``knowledge.cooccurrence``; scores are the history-weighted sum of the
    neighbours' co-occurrence, computed once per view and cached on it.
    """

    def __init__(self, knowledge: ItemKnowledge, catalog: Catalog) -> None:
        self.knowledge = knowledge
        self.catalog = catalog

    def scores(self, view: UserView) -> tuple[np.ndarray, np.ndarray]:
        """The user's live co-occurrence candidates (sorted rows) and their scores."""
        if view.cooc_rows is None or view.cooc_scores is None:
            rows, scores = self.knowledge.cooccurrence.sparse_scores(
                view.history_rows, view.history_weights
            )
            width = self.catalog.rows_allocated
            live = rows < width
            live[live] = self.catalog.alive[rows[live]]
            view.cooc_rows, view.cooc_scores = rows[live], scores[live]
            view.cooc_scale = max(sum(view.history_weights), 1e-9)
        return view.cooc_rows, view.cooc_scores

    def scores_at(self, view: UserView, rows: np.ndarray) -> np.ndarray:
        """Co-occurrence scores of ``rows`` (0.0 where none)."""
        known, scores = self.scores(view)
        out = np.zeros(len(rows), dtype=np.float64)
        if len(known):
            at = np.minimum(np.searchsorted(known, rows), len(known) - 1)
            hit = known[at] == rows
            out[hit] = scores[at[hit]]
        return out

    def candidates(self, view: UserView, budget: int) -> np.ndarray:
        """The ``budget`` best-scored rows the user may be shown, best first."""
        rows, scores = self.scores(view)
        allowed = ~view.blocked[rows]
        return top_sparse(rows[allowed], scores[allowed], budget)

    def reasons(self, view: UserView, rows: Sequence[int]) -> list[str]:
        """Why each of ``rows``: the history item it co-occurs with most."""
        return cooccurrence_reasons(
            view.history_rows,
            view.history_weights,
            self.knowledge.cooccurrence,
            self.catalog,
            rows,
        )


class TrendingSource:
    """Items with the most decayed interaction weight at the engine's clock.

    ``horizon`` names the count read from ``knowledge``: ``"trending"`` (short
    half-life, recomputed on every call) or ``"popularity"`` (long half-life, cached
    until the next applied event or :meth:`invalidate`).
    """

    def __init__(
        self, knowledge: ItemKnowledge, catalog: Catalog, clock: Clock, horizon: str
    ) -> None:
        if horizon not in ("trending", "popularity"):
            raise ValueError(f"unknown horizon {horizon!r}")
        self.knowledge = knowledge
        self.catalog = catalog
        self.clock = clock
        self.horizon = horizon
        self._cache: tuple[int, np.ndarray, float] | None = None

    def invalidate(self) -> None:
        """Drop the cached scores (the catalog changed)."""
        self._cache = None

    def dense(self) -> tuple[np.ndarray, float]:
        """Dense decayed scores per row (dead rows 0), and their maximum."""
        cached = self.horizon == "popularity"
        if cached and self._cache is not None and self._cache[0] == self.clock.events_seen:
            return self._cache[1], self._cache[2]
        counts = getattr(self.knowledge, self.horizon)
        width = self.catalog.rows_allocated
        dense = counts.scores(self.clock.now_ts, width)
        dense[~self.catalog.alive[:width]] = 0.0
        top = float(dense.max()) if width else 0.0
        if cached:
            self._cache = (self.clock.events_seen, dense, top)
        return dense, top

    @staticmethod
    def feature(dense: tuple[np.ndarray, float], rows: np.ndarray) -> np.ndarray:
        """log1p of the rows' scores over log1p of the top score (0 when nothing yet)."""
        scores, top = dense
        if top <= 0.0:
            return np.zeros(len(rows), dtype=np.float64)
        return np.log1p(scores[rows]) / math.log1p(top)


class Candidates:
    """Builds :class:`UserView` s and unites the sources' rows per user.

    ``features`` (see :mod:`interest_core.strategies`) switches sources on; ``settings``
    gives the per-source budget and the co-occurrence window (history items); ``space``
    holds the adaptation layer in use (default: none, the identity): a view's content
    vectors are mapped by it (user states stay in the encoder's raw space).
    """

    def __init__(
        self,
        catalog: Catalog,
        index: ItemIndex,
        knowledge: ItemKnowledge,
        interest: InterestModel,
        fusion: FusionWeights,
        clock: Clock,
        features: Sequence[str],
        settings: RecommendSettings,
        space: ItemSpace | None = None,
    ) -> None:
        self.catalog = catalog
        self.space = space or ItemSpace(catalog, "")
        #: True when the layer's cosine is a feature of its own (``adapted``): content
        #: candidates and cosines then stay in the raw space (:attr:`content_space`).
        self.separate_adapted = "adapted" in features
        self.content_space = (
            ItemSpace(catalog, self.space.encoder) if self.separate_adapted else self.space
        )
        self.interest = interest
        self.clock = clock
        self.features = tuple(features)
        self.settings = settings
        self.content = ContentSource(
            catalog, index, features, fusion, settings.candidates_per_source, self.content_space
        )
        self.cooccurrence = CooccurrenceSource(knowledge, catalog)
        self.trending = TrendingSource(knowledge, catalog, clock, "trending")
        self.popularity = TrendingSource(knowledge, catalog, clock, "popularity")
        self.windows = HistoryWindows(catalog, settings.cooccurrence_window)

    def history(self, state: UserState | None) -> tuple[list[int], list[float]]:
        """The user's co-occurrence window: recent positive rows and weights (see
        :func:`~interest_core.history.recent_history`)."""
        return self.windows.history(state)

    def history_rows(self, state: UserState | None) -> list[int]:
        """The rows of :meth:`history` alone (every positive event asks for them)."""
        return self.windows.rows(state)

    def blocked(self, item_ids: Iterable[str], seen_by: UserState | None = None) -> np.ndarray:
        """Boolean mask over rows: dead items, ``item_ids`` and the items ``seen_by`` has
        seen are True."""
        width = self.catalog.rows_allocated
        blocked = ~self.catalog.alive[:width]
        row_of = self.catalog.row_of
        rows = [r for r in map(row_of.get, item_ids) if r is not None]
        if rows:
            blocked[rows] = True
        if seen_by is not None and seen_by.seen:
            blocked[self._seen_rows(seen_by)] = True
        return blocked

    def _seen_rows(self, state: UserState) -> np.ndarray:
        """The catalog rows of ``state``'s seen items; looked up again, all of them, only
        when the catalog's layout changed since (an item added or removed: a removed
        item that comes back has a new row)."""
        seen, layout = state.seen, self.catalog.layout
        if state.seen_layout != layout:
            row_of = self.catalog.row_of
            for item_id in seen:
                seen[item_id] = row_of.get(item_id, -1)
            state.seen_layout = layout
        rows = np.fromiter(seen.values(), np.intp, len(seen))
        return rows[rows >= 0]

    def view(self, state: UserState | None, blocked: np.ndarray, n_excluded: int) -> UserView:
        """The user's :class:`UserView` at the clock's time (``state`` None: a new user)."""
        empty = np.zeros((0, self.catalog.dim), dtype=np.float32)
        if state is None:
            return UserView(None, empty, None, None, [], [], blocked, n_excluded)
        slots = empty
        if self.interest.use_slots and state.slot_weights:
            slots = state.slot_dirs.astype(np.float32)
        short = None
        freshness = self.interest.short_term_freshness(state, self.clock.now_ts)
        if freshness > 0.0:
            short = state.short_dir.astype(np.float32) * freshness
        long_dir = state.long_dir.astype(np.float32) if state.long_mass > 0.0 else None
        adapter = self.space.adapter
        adapted = None
        if not adapter.is_identity:  # W u: the state's raw vectors into the adapted space
            adapted = (
                adapter.project_queries(slots) if len(slots) else slots,
                None if short is None else adapter.project_queries(short[None, :])[0],
                None if long_dir is None else adapter.project_queries(long_dir[None, :])[0],
            )
            if not self.separate_adapted:
                slots, short, long_dir = adapted
                adapted = None
        rows, weights = self.history(state) if "cooccurrence" in self.features else ([], [])
        view = UserView(state, slots, short, long_dir, rows, weights, blocked, n_excluded)
        view.adapted = adapted
        return view

    def gather(
        self, views: Sequence[UserView], k: int, content: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[np.ndarray, float]]:
        """Per view: the union of the sources' candidate rows (sorted) and the allowed
        trending rows that top a short list up; plus the trending scores used."""
        trend = self.trending.dense()
        budget = self.settings.candidates_per_source
        longest = max(v.n_excluded for v in views)
        fetch = budget + min(longest, _MAX_OVERFETCH) + k
        trend_order = top_rows(trend[0], fetch)
        popular_order = (
            top_rows(self.popularity.dense()[0], fetch) if "popularity" in self.features else None
        )
        united: list[np.ndarray] = []
        fills: list[np.ndarray] = []
        for view, content_rows in zip(views, content, strict=True):
            parts = [content_rows]
            if "cooccurrence" in self.features and view.history_rows:
                parts.append(self.cooccurrence.candidates(view, budget))
            allowed_trending = trend_order[~view.blocked[trend_order]]
            if "trending" in self.features:
                parts.append(allowed_trending[:budget])
            if popular_order is not None:
                parts.append(popular_order[~view.blocked[popular_order]][:budget])
            united.append(sorted_unique(np.concatenate(parts)))
            fills.append(allowed_trending)
        return united, fills, trend
