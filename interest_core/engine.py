"""The Engine: the one facade the worker and the evaluation both call.

``process(events)`` is the worker's call: bad item references come back as rejected
values, the batch's distinct texts are redacted and encoded in one encoder call, events
are applied in order per user (replays skipped), then all touched users get fresh
recommendations from one batched index search. ``learn`` / ``recommend`` split the same
work for the prequential evaluation.

Strategies switch sources and features on the same code paths:

========  ==========================================  =================================
strategy  candidate sources                           fused features
========  ==========================================  =================================
popular   trending                                    trending
itemknn   co-occurrence                               co-occurrence
static    one long-term content vector (no decay)     long-term cosine
dynamic   slots + short-term + decayed long-term      slot, short-term, long-term cosine
hybrid    all of the above                            all six, weights learned online
========  ==========================================  =================================

Every list is topped up from trending when its sources give fewer than ``k`` items, so a
new user (no history) gets the popular items.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from interest_core.catalog import Catalog
from interest_core.cooccurrence import CoOccurrence
from interest_core.diversity import mmr
from interest_core.encoder import CachedEncoder, Encoder
from interest_core.fusion import FusionWeights
from interest_core.index import ItemIndex
from interest_core.intent import IntentModel
from interest_core.interest import InterestModel, RecentItem, UserState
from interest_core.item_knowledge import ItemKnowledge
from interest_core.item_signals import FusionFeedback, ItemSignal, SignalBuffer
from interest_core.item_view import KnowledgeView, Laid
from interest_core.labels import LabelModel, LabelVocabulary
from interest_core.params import ParamRecord
from interest_core.reasons import Anchors, content_reason, cooccurrence_reason
from interest_core.records import (
    CatalogItem,
    Event,
    Intent,
    InterestLabel,
    Recommendation,
    RecommendedItem,
    Rejected,
)
from interest_core.redact import redact
from interest_core.settings import Settings
from interest_core.signals import event_weight
from interest_core.trending import Trending

__all__ = ["FEATURES", "INITIAL_FUSION", "STRATEGIES", "BatchOutcome", "BatchStats", "Engine"]

log = logging.getLogger(__name__)

FEATURES = ("slot", "short_term", "long_term", "cooccurrence", "trending", "popularity")
# Neutral start per source: the three content cosines share one source's weight.
INITIAL_FUSION = (1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1.0)
STRATEGIES = ("popular", "itemknn", "static", "dynamic", "hybrid")
_STRATEGY_FEATURES: dict[str, tuple[str, ...]] = {
    "popular": ("trending",),
    "itemknn": ("cooccurrence",),
    "static": ("long_term",),
    "dynamic": ("slot", "short_term", "long_term"),
    "hybrid": FEATURES,
}
_SEEN_LIMIT = 1000  # items remembered per user for "already consumed" filtering
_RANKED_KEPT = 100  # best-ranked candidates remembered per user for the fusion update
_RANKINGS_KEPT = 20_000  # users whose last ranking is remembered: <= 8.5 MB (LRU)
_MAX_OVERFETCH = 200  # extra index results fetched per query vector to survive exclusions
_COOC_DECAY_PER_ITEM = 0.85  # recency weight of the i-th most recent item in co-occurrence
# A new positive item pairs with the i-th newest history item with weight 0.85**i: items
# consumed close together in a user's sequence are stronger evidence of relatedness
# (session-kNN style position decay); the same recency scale as above, not tuned.
_PAIR_DECAY_PER_ITEM = _COOC_DECAY_PER_ITEM
_INTERESTS_SHOWN = 5
_OWN_LESSONS_KEPT = 50_000  # own fusion lessons re-applied over the fleet's weights
_blas_limited = False
# Up to this many query vectors, one matrix-vector product each beats one single-threaded
# OpenBLAS matrix product (5 vectors x 9,125 items x 256 dims: 0.9 ms vs 1.7 ms).
_GEMV_MAX_VECTORS = 8
_NEUTRAL_INTENT = ("browse", 0.2)  # no text event yet: browse, at uniform confidence
_ACTIONS = {
    "view": "viewed",
    "click": "clicked",
    "add_to_cart": "added to your cart",
    "purchase": "bought",
    "review": "reviewed",
    "skip": "skipped",
    "dislike": "disliked",
}


@dataclass(frozen=True)
class BatchStats:
    """Where a ``process`` call spent its time (seconds) and what it encoded (texts)."""

    encode_s: float = 0.0
    update_s: float = 0.0
    search_s: float = 0.0
    rank_s: float = 0.0
    texts_encoded: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    events_applied: int = 0


@dataclass(frozen=True)
class BatchOutcome:
    """What a ``process`` call produced; the worker publishes and commits from it."""

    recommendations: list[Recommendation]
    rejected: list[tuple[Event, Rejected]]
    changed_users: list[str]
    deleted_users: list[str]
    duplicates: int
    stats: BatchStats = field(default_factory=BatchStats)


@dataclass
class _Query:
    """One user's view at ranking time: directions, history and feature scales."""

    state: UserState | None
    slot_dirs: np.ndarray
    short_dir: np.ndarray | None
    long_dir: np.ndarray | None
    history_rows: list[int]
    history_weights: list[float]
    blocked: np.ndarray  # bool per row: dead or excluded for this user
    n_excluded: int
    cooc_rows: np.ndarray | None = None  # sorted rows with a co-occurrence score
    cooc_scores: np.ndarray | None = None
    cooc_scale: float = 1.0
    anchors: Anchors | None = None


def _one_blas_thread() -> None:
    """Run numpy's OpenBLAS on one thread, once per process. The engine's products are
    small (a micro-batch's users x the catalog at most), and OpenBLAS's spin-waiting
    threads cost more than they save on a busy machine: ``process`` measured 2.7-6.8k
    events/s with two threads and a steady 7.5k with one (2 shared cores, MovieLens).
    torch (the encoder) uses its own thread pools and is not affected."""
    global _blas_limited
    if not _blas_limited:
        ThreadpoolController().select(internal_api="openblas").limit(limits=1)
        _blas_limited = True


class Engine:
    """The interest model and hybrid recommender over one catalog (no I/O).

    ``encoder`` turns texts into unit vectors; ``settings`` supplies model, index and
    recommendation hyper-parameters; ``strategy`` is one of :data:`STRATEGIES`;
    ``model_name`` is reported in records (default: the encoder's name).
    """

    def __init__(
        self,
        encoder: Encoder,
        settings: Settings,
        *,
        strategy: str = "hybrid",
        model_name: str | None = None,
        emit_item_signals: bool = False,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        _one_blas_thread()
        self.encoder = encoder
        self.settings = settings
        self.strategy = strategy
        self.model_name = model_name or encoder.name
        self.dim = encoder.dim
        rec = settings.recommend
        self.catalog = Catalog(self.dim)
        self.index = ItemIndex(
            self.dim,
            exact_max_items=settings.index.exact_max_items,
            hnsw_m=settings.index.hnsw_m,
            hnsw_ef_search=settings.index.hnsw_ef_search,
            hnsw_ef_construction=settings.index.hnsw_ef_construction,
        )
        self.cooccurrence = CoOccurrence()
        self.trending = Trending(rec.trending_half_life_s)
        # The same count on the long-term horizon: an item prior for the fusion.
        self.popularity = Trending(settings.model.long_term_half_life_s)
        self.features = _STRATEGY_FEATURES[strategy]
        # The fleet's item knowledge (interest.items) replaces these rows as it arrives;
        # local updates in between are a preview of what the aggregation will say.
        self.item_view = KnowledgeView(
            self.catalog.row, self.cooccurrence, self.trending, self.popularity
        )
        #: With ``emit_item_signals``, what applied events teach about items, for the
        #: item-keyed stage (see :mod:`interest_core.item_signals`); drained by the worker.
        self.outbox = SignalBuffer(_PAIR_DECAY_PER_ITEM) if emit_item_signals else None
        self._own_lessons: deque[FusionFeedback] = deque(maxlen=_OWN_LESSONS_KEPT)
        self.fusion = FusionWeights(
            FEATURES, self.features, learning_rate=rec.fusion_learning_rate, initial=INITIAL_FUSION
        )
        static = strategy == "static"
        self.interest = InterestModel(
            settings.model,
            use_slots="slot" in self.features,
            use_short_term="short_term" in self.features,
            long_term_half_life_s=math.inf if static else None,
        )
        self.label_model = LabelModel(settings.model.long_term_half_life_s)
        self.vocabulary = LabelVocabulary()
        self._labels_dirty = True
        self._intent: IntentModel | None = None
        self.users: dict[str, UserState] = {}
        # Per user, from the last ranking: BPR negatives and the feature scales used.
        self._shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.now_ts = 0.0  # newest event time seen (seconds); the clock of all decay
        self._events_seen = 0
        self._popularity_cache: tuple[int, np.ndarray, float] | None = None

    # ------------------------------------------------------------------ catalog

    @property
    def catalog_size(self) -> int:
        """Live items."""
        return len(self.catalog)

    @property
    def users_held(self) -> int:
        """Users whose state is in memory."""
        return len(self.users)

    def has_item(self, item_id: str) -> bool:
        """True when ``item_id`` is a live catalog item."""
        return self.catalog.row(item_id) is not None

    def upsert_items(self, items: Sequence[CatalogItem]) -> None:
        """Add or update items; only new or changed texts are encoded (one encoder call)."""
        latest = {item.item_id: item for item in items}
        changed = self.catalog.changed(list(latest.values()))
        if not changed:
            return
        prefix = self.settings.encoder.document_prefix
        texts = [prefix + text for _, text in changed]
        vectors = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        rows = []
        for (item, text), vector in zip(changed, vectors, strict=True):
            row, _ = self.catalog.put(item, text, vector)
            rows.append(row)
        self.index.upsert(rows, vectors)
        self._labels_dirty = True
        self._popularity_cache = None
        if len(self.item_view):
            self.item_view.remap([item.item_id for item, _ in changed])

    def delete_items(self, item_ids: Iterable[str]) -> None:
        """Remove items from the catalog, the index, co-occurrence and trending. They never
        come back in a recommendation unless the catalog publishes them again."""
        rows = [r for r in (self.catalog.remove(i) for i in item_ids) if r is not None]
        if not rows:
            return
        self.index.delete(rows)
        for row in rows:
            self.cooccurrence.remove(row)
            self.trending.remove(row)
            self.popularity.remove(row)
        self._popularity_cache = None
        self._labels_dirty = True

    def _vocabulary(self) -> LabelVocabulary:
        if self._labels_dirty:
            labels = {
                label for row in self.catalog.row_of.values() for label in self.catalog.labels[row]
            }
            self.vocabulary.refresh(sorted(labels), self.encoder)
            self._labels_dirty = False
        return self.vocabulary

    def _intent_model(self) -> IntentModel:
        if self._intent is None:
            self._intent = IntentModel(self.encoder)
        return self._intent

    # ------------------------------------------------------------------ events

    def process(
        self, events: Sequence[Event], *, published_at: float | None = None
    ) -> BatchOutcome:
        """Apply a micro-batch and return one fresh Recommendation per touched user.

        ``published_at`` (wall-clock seconds) is stamped on the records and used as the
        users' last activity; it defaults to the newest event time.
        """
        hits0, misses0, encoded0 = self._cache_counters()
        rejected, valid = self._validate(events)
        t0 = time.perf_counter()
        vectors, intents = self._encode_texts(valid)
        t1 = time.perf_counter()
        touched: dict[str, Event] = {}
        event_ts: dict[str, float] = {}
        deleted: list[str] = []
        duplicates = applied = 0
        for event in valid:
            if event.type == "delete_user":
                self.forget_user(event.user_id)
                touched.pop(event.user_id, None)
                deleted.append(event.user_id)
                continue
            if not self._apply(event, vectors, intents, published_at):
                duplicates += 1
                continue
            applied += 1
            touched[event.user_id] = event
            event_ts[event.user_id] = max(event_ts.get(event.user_id, event.ts), event.ts)
        t2 = time.perf_counter()
        user_ids = list(touched)
        timings: dict[str, float] = {}
        ranked = self._recommend(user_ids, self.settings.recommend.k, True, None, timings)
        stamp = published_at if published_at is not None else self.now_ts
        recommendations = []
        for user_id in user_ids:
            state = self.users[user_id]
            state.version += 1
            recommendations.append(
                Recommendation(
                    user_id=user_id,
                    version=state.version,
                    event_ts=event_ts[user_id],
                    published_at=stamp,
                    trigger_event_id=touched[user_id].event_id,
                    items=tuple(ranked.get(user_id, [])),
                    interests=tuple(InterestLabel(name, w) for name, w in self.interests(user_id)),
                    intent=self.intent_of(user_id),
                    model=self.model_name,
                )
            )
        hits1, misses1, encoded1 = self._cache_counters()
        stats = BatchStats(
            encode_s=t1 - t0,
            update_s=t2 - t1,
            search_s=timings.get("search_s", 0.0),
            rank_s=timings.get("rank_s", 0.0),
            texts_encoded=encoded1 - encoded0,
            cache_hits=hits1 - hits0,
            cache_misses=misses1 - misses0,
            events_applied=applied,
        )
        return BatchOutcome(
            recommendations=recommendations,
            rejected=rejected,
            changed_users=user_ids,
            deleted_users=[u for u in dict.fromkeys(deleted) if u not in touched],
            duplicates=duplicates,
            stats=stats,
        )

    def learn(self, events: Sequence[Event]) -> None:
        """Apply events without recommending (the evaluation's update step). Events naming
        unknown items are skipped; replays are ignored."""
        _, valid = self._validate(events)
        vectors, intents = self._encode_texts(valid)
        for event in valid:
            if event.type == "delete_user":
                self.forget_user(event.user_id)
            else:
                self._apply(event, vectors, intents, None)

    def _cache_counters(self) -> tuple[int, int, int]:
        if isinstance(self.encoder, CachedEncoder):
            return self.encoder.hits, self.encoder.misses, self.encoder.texts_encoded
        return 0, 0, 0

    def _validate(
        self, events: Sequence[Event]
    ) -> tuple[list[tuple[Event, Rejected]], list[Event]]:
        rejected: list[tuple[Event, Rejected]] = []
        valid: list[Event] = []
        for event in events:
            if (
                event.type != "delete_user"
                and event.item_id is not None
                and not self.has_item(event.item_id)
            ):
                rejected.append(
                    (
                        event,
                        Rejected(
                            "unknown_item", f"unknown item {event.item_id[:80]!r}", event.to_json()
                        ),
                    )
                )
            else:
                valid.append(event)
        return rejected, valid

    def _encode_texts(
        self, events: Sequence[Event]
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, float]]]:
        """Redacted texts of the batch -> unit vectors and intents, in one encoder call."""
        texts = list(
            dict.fromkeys(redact(e.text) for e in events if e.text and e.type != "delete_user")
        )
        if not texts:
            return {}, {}
        prefix = self.settings.encoder.query_prefix
        matrix = np.asarray(self.encoder.encode([prefix + t for t in texts]), dtype=np.float32)
        intents = self._intent_model().classify(matrix)
        return dict(zip(texts, matrix, strict=True)), dict(zip(texts, intents, strict=True))

    def _apply(
        self,
        event: Event,
        vectors: Mapping[str, np.ndarray],
        intents: Mapping[str, tuple[str, float]],
        active_at: float | None,
    ) -> bool:
        state = self.users.get(event.user_id)
        if state is None:
            state = self.users[event.user_id] = UserState(event.user_id, self.dim)
        elif state.already_applied(event.event_id, event.offset):
            return False
        ts = event.ts
        self.now_ts = max(self.now_ts, ts)
        self._events_seen += 1
        source = (
            self.outbox.source(event.partition, event.offset) if self.outbox is not None else (0, 0)
        )
        text = redact(event.text) if event.text else None
        intent = intents.get(text) if text else None
        weight = event_weight(event, self.settings.model.negative_weight)
        if (
            event.type == "review"
            and intent is not None
            and intent[0] == "complaint"
            and intent[1] >= 0.5
        ):
            weight = -abs(weight)  # a complaint about the item is not "more like this"
        if event.item_id is not None:
            row = self.catalog.row(event.item_id)
            assert row is not None  # validated
            if weight > 0.0 and self.fusion.mask.sum() > 1:
                self._learn_fusion(state, row, source)
            if weight > 0.0:
                history: list[int] = []
                if "cooccurrence" in self.features:
                    window = self.settings.recommend.cooccurrence_window
                    history = self._history(state, window)[0]
                    self.cooccurrence.add(row, history, decay=_PAIR_DECAY_PER_ITEM)
                if self.outbox is not None:
                    item_ids = self.catalog.item_ids
                    own = self.outbox.positive(
                        event.item_id,
                        [item_ids[r] for r in history],
                        weight=weight,
                        ts=ts,
                        source=source,
                    )
                    self.item_view.own(own)
                self.trending.add(row, weight, ts)
                if "popularity" in self.features:
                    self.popularity.add(row, weight, ts)
            self.interest.apply(state, self.catalog.embeddings[row], weight, ts)
            self.label_model.add_item(state, self.catalog.labels[row], weight, ts)
            state.remember_item(
                RecentItem(event.item_id, ts, weight, self._action(event)),
                self.settings.model.recent_items,
                _SEEN_LIMIT,
            )
        if text is not None and text in vectors:
            vector = vectors[text]
            text_weight = weight if event.type in ("search", "chat") else 0.5 * max(weight, 0.0)
            self.interest.apply(state, vector, text_weight, ts)
            self.label_model.add_text(state, self._vocabulary().nearest(vector), text_weight, ts)
            state.remember_text(text, vector, ts)
            if intent is not None:
                state.intent = intent
        state.mark_applied(event.event_id, event.offset, event.type, ts)
        state.active_at = active_at if active_at is not None else max(state.active_at, ts)
        return True

    @staticmethod
    def _action(event: Event) -> str:
        if event.type == "rate":
            rating = event.rating if event.rating is not None else 0.0
            return f"rated {rating:g}"
        return _ACTIONS.get(event.type, event.type)

    # ------------------------------------------------------------------ fusion learning

    def _learn_fusion(self, state: UserState, row: int, source: tuple[int, int]) -> None:
        """Fusion step when the user acts on one of their last ranked candidates: the
        softmax likelihood of that item among all of them, with features from the state
        before this event (scaled as in that ranking). An item outside the candidates
        teaches the ranker nothing it could have ordered. One ranking teaches one step
        (the first of its candidates acted on); the next ranking is a new lesson."""
        remembered = self._shown.get(state.user_id)
        if remembered is None:
            return
        ranked, scales = remembered
        position = np.flatnonzero(ranked == row)
        if position.size == 0:
            return
        del self._shown[state.user_id]
        candidates = ranked[self.catalog.alive[ranked]]
        query = self._query(state, self._blocked([]), 0)
        features = self._feature_matrix(query, candidates, self._trend()) / scales
        step = self.fusion.listwise_gradient(features, int(np.flatnonzero(candidates == row)[0]))
        if step is None:
            return
        self.fusion.apply_gradient(step[0])
        if self.outbox is not None:
            self._own_lessons.append(self.outbox.lesson(step[0], source))

    # ------------------------------------------------------------------ recommending

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int,
        *,
        exclude_seen: bool = True,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[RecommendedItem]]:
        """Top ``k`` items per user, best first, each with a reason.

        ``exclude_seen`` drops the items the user already acted on (bounded history);
        ``exclude`` maps a user to more item ids to leave out (the evaluation passes every
        item the user interacted with). Unknown users get the cold-start list (trending).
        """
        return self._recommend(list(dict.fromkeys(user_ids)), k, exclude_seen, exclude, {})

    def _blocked(self, item_ids: Iterable[str]) -> np.ndarray:
        """Boolean mask over rows: dead items and ``item_ids`` are True."""
        width = self.catalog.rows_allocated
        blocked = ~self.catalog.alive[:width]
        row_of = self.catalog.row_of
        rows = [r for r in map(row_of.get, item_ids) if r is not None]
        if rows:
            blocked[rows] = True
        return blocked

    def _recommend(
        self,
        user_ids: list[str],
        k: int,
        exclude_seen: bool,
        exclude: Mapping[str, Collection[str]] | None,
        timings: dict[str, float],
    ) -> dict[str, list[RecommendedItem]]:
        if not user_ids or k <= 0:
            return {u: [] for u in user_ids}
        t0 = time.perf_counter()
        queries: list[_Query] = []
        for user_id in user_ids:
            state = self.users.get(user_id)
            ids: list[str] = []
            if state is not None and exclude_seen:
                ids.extend(state.seen)
            if exclude is not None and user_id in exclude:
                ids.extend(exclude[user_id])
            queries.append(self._query(state, self._blocked(ids), len(ids)))
        content = self._content_candidates(queries)
        t1 = time.perf_counter()
        trend = self._trend()
        budget = self.settings.recommend.candidates_per_source
        longest = max(q.n_excluded for q in queries)
        fetch = budget + min(longest, _MAX_OVERFETCH) + k
        trend_order = self._top(trend[0], fetch)
        popular_order = (
            self._top(self._popularity()[0], fetch) if "popularity" in self.features else None
        )
        out: dict[str, list[RecommendedItem]] = {}
        for user_id, query, content_rows in zip(user_ids, queries, content, strict=True):
            parts = [content_rows]
            if "cooccurrence" in self.features and query.history_rows:
                cooc_rows, cooc_scores = self._cooc(query)
                allowed = ~query.blocked[cooc_rows]
                parts.append(self._top_sparse(cooc_rows[allowed], cooc_scores[allowed], budget))
            allowed_trending = trend_order[~query.blocked[trend_order]]
            if "trending" in self.features:
                parts.append(allowed_trending[:budget])
            if popular_order is not None:
                parts.append(popular_order[~query.blocked[popular_order]][:budget])
            rows = np.unique(np.concatenate(parts))
            out[user_id] = self._rank(user_id, query, rows, k, allowed_trending, trend)
        timings["search_s"] = t1 - t0
        timings["rank_s"] = time.perf_counter() - t1
        return out

    def _history(
        self, state: UserState | None, limit: int | None = None
    ) -> tuple[list[int], list[float]]:
        """Live rows of the user's positive recent items, newest first, with weights
        (event weight x recency); at most ``limit`` rows (scanning stops there)."""
        rows: list[int] = []
        weights: list[float] = []
        if state is None:
            return rows, weights
        limit = len(state.recent) if limit is None else limit
        if limit <= 0:
            return rows, weights
        row_of = self.catalog.row_of
        decay = 1.0
        for item in reversed(state.recent):
            weight = item.weight
            if weight <= 0.0:
                continue
            row = row_of.get(item.item_id)
            if row is None or row in rows:
                continue
            weights.append(weight * decay)
            rows.append(row)
            if len(rows) == limit:
                break
            decay *= _COOC_DECAY_PER_ITEM
        return rows, weights

    def _query(self, state: UserState | None, blocked: np.ndarray, n_excluded: int) -> _Query:
        empty = np.zeros((0, self.dim), dtype=np.float32)
        if state is None:
            return _Query(None, empty, None, None, [], [], blocked, n_excluded)
        slots = empty
        if self.interest.use_slots and state.slot_weights:
            slots = state.slot_dirs.astype(np.float32)
        short = None
        freshness = self.interest.short_term_freshness(state, self.now_ts)
        if freshness > 0.0:
            short = state.short_dir.astype(np.float32) * freshness
        long_dir = state.long_dir.astype(np.float32) if state.long_mass > 0.0 else None
        window = self.settings.recommend.cooccurrence_window
        rows, weights = (
            self._history(state, window) if "cooccurrence" in self.features else ([], [])
        )
        return _Query(state, slots, short, long_dir, rows, weights, blocked, n_excluded)

    def _content_candidates(self, queries: list[_Query]) -> list[np.ndarray]:
        """Candidate rows from each user's content vectors, by ONE batched index search."""
        out = [np.empty(0, dtype=np.int64) for _ in queries]
        if not ({"slot", "short_term", "long_term"} & set(self.features)) or not len(self.index):
            return out
        vectors: list[np.ndarray] = []
        owners: list[int] = []
        kinds: list[int] = []  # the vector's feature column: 0 slot, 1 short, 2 long
        for i, query in enumerate(queries):
            parts: list[tuple[int, np.ndarray]] = []
            if "slot" in self.features:
                parts.extend((0, d) for d in query.slot_dirs)
            if "short_term" in self.features and query.short_dir is not None:
                parts.append((1, query.short_dir))
            if "long_term" in self.features and query.long_dir is not None:
                parts.append((2, query.long_dir))
            for kind, vector in parts:
                if np.any(vector):
                    vectors.append(vector)
                    owners.append(i)
                    kinds.append(kind)
        if not vectors:
            return out
        budget = self.settings.recommend.candidates_per_source
        picked: list[list[np.ndarray]] = [[] for _ in queries]
        matrix = np.stack(vectors)
        if self.index.approximate:
            overfetch = min(max(q.n_excluded for q in queries), _MAX_OVERFETCH)
            _, found = self.index.search(matrix, budget + overfetch)
            for owner, rows in zip(owners, found, strict=True):
                rows = rows[rows >= 0]
                rows = rows[~queries[owner].blocked[rows]]
                picked[owner].append(rows[:budget])
        else:
            return self._exact_content(queries, matrix, owners, kinds, budget)
        return [np.concatenate(p) if p else o for p, o in zip(picked, out, strict=True)]

    def _exact_content(
        self,
        queries: list[_Query],
        matrix: np.ndarray,
        owners: list[int],
        kinds: list[int],
        budget: int,
    ) -> list[np.ndarray]:
        """Exact content candidates: one product of every query vector with the catalog
        (dead rows are zero), then per user the ``budget`` allowed rows with the best
        content part of the fused score (best slot, short-term, long-term cosine, each
        over its largest magnitude, times the fusion weights): the items the ranker
        itself would put first on content, not ``budget`` per vector."""
        width = self.catalog.rows_allocated
        embeddings = self.catalog.embeddings[:width]
        if len(matrix) <= _GEMV_MAX_VECTORS:  # memory-bound: one pass per vector is faster
            products = np.stack([embeddings @ vector for vector in matrix], axis=1)
        else:
            products = embeddings @ matrix.T  # (width, n_vectors)
        weights = np.maximum(self.fusion.weights[:3], 1e-3)
        columns: list[list[list[int]]] = [[[], [], []] for _ in queries]
        for column, (owner, kind) in enumerate(zip(owners, kinds, strict=True)):
            columns[owner][kind].append(column)
        out: list[np.ndarray] = []
        take = min(budget, width)
        for query, by_kind in zip(queries, columns, strict=True):
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
            score[query.blocked] = -np.inf
            top = np.argpartition(-score, take - 1)[:take] if take < width else np.arange(width)
            top = top[np.isfinite(score[top])]
            out.append(top[np.argsort(-score[top], kind="stable")].astype(np.int64))
        return out

    def _cooc(self, query: _Query) -> tuple[np.ndarray, np.ndarray]:
        """The user's live co-occurrence candidates (sorted rows) and their scores."""
        if query.cooc_rows is None or query.cooc_scores is None:
            rows, scores = self.cooccurrence.sparse_scores(
                query.history_rows, query.history_weights
            )
            width = self.catalog.rows_allocated
            live = rows < width
            live[live] = self.catalog.alive[rows[live]]
            query.cooc_rows, query.cooc_scores = rows[live], scores[live]
            query.cooc_scale = max(sum(query.history_weights), 1e-9)
        return query.cooc_rows, query.cooc_scores

    def _cooc_at(self, query: _Query, rows: np.ndarray) -> np.ndarray:
        """Co-occurrence scores of ``rows`` (0.0 where none)."""
        known, scores = self._cooc(query)
        out = np.zeros(len(rows), dtype=np.float64)
        if len(known):
            at = np.minimum(np.searchsorted(known, rows), len(known) - 1)
            hit = known[at] == rows
            out[hit] = scores[at[hit]]
        return out

    @staticmethod
    def _top_sparse(rows: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
        """``rows`` of the ``count`` largest positive ``scores``, best first (ties by row)."""
        positive = scores > 0.0
        rows, scores = rows[positive], scores[positive]
        if len(rows) > count:
            keep = np.argpartition(-scores, count - 1)[:count]
            rows, scores = rows[keep], scores[keep]
        return rows[np.lexsort((rows, -scores))].astype(np.int64)

    @staticmethod
    def _top(dense: np.ndarray, count: int) -> np.ndarray:
        """Rows of the ``count`` largest positive values, best first (ties by row)."""
        positive = int(np.count_nonzero(dense > 0.0))
        take = min(positive, count)
        if take <= 0:
            return np.empty(0, dtype=np.int64)
        top = (
            np.argpartition(-dense, take - 1)[:take] if take < len(dense) else np.arange(len(dense))
        )
        return top[np.lexsort((top, -dense[top]))].astype(np.int64)

    def _trend(self) -> tuple[np.ndarray, float]:
        """Dense decayed trending scores at the engine's clock, and their maximum."""
        width = self.catalog.rows_allocated
        dense = self.trending.scores(self.now_ts, width)
        dense[~self.catalog.alive[:width]] = 0.0
        return dense, float(dense.max()) if width else 0.0

    def _popularity(self) -> tuple[np.ndarray, float]:
        """Dense long-horizon popularity at the engine's clock, and its maximum (cached
        until the next event)."""
        if self._popularity_cache is None or self._popularity_cache[0] != self._events_seen:
            width = self.catalog.rows_allocated
            dense = self.popularity.scores(self.now_ts, width)
            dense[~self.catalog.alive[:width]] = 0.0
            self._popularity_cache = (
                self._events_seen,
                dense,
                float(dense.max()) if width else 0.0,
            )
        return self._popularity_cache[1], self._popularity_cache[2]

    def _feature_matrix(
        self, query: _Query, rows: np.ndarray, trend: tuple[np.ndarray, float]
    ) -> np.ndarray:
        """``(len(rows), len(FEATURES))``: cosine to the best slot, to the short-term
        vector (times its freshness), to the long-term vector; co-occurrence score over
        the user's summed history weight; trending over the top trending score."""
        embeddings = self.catalog.embeddings[rows]
        features = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
        enabled = self.features
        if "slot" in enabled and len(query.slot_dirs):
            features[:, 0] = (embeddings @ query.slot_dirs.T).max(axis=1)
        if "short_term" in enabled and query.short_dir is not None:
            features[:, 1] = embeddings @ query.short_dir
        if "long_term" in enabled and query.long_dir is not None:
            features[:, 2] = embeddings @ query.long_dir
        if "cooccurrence" in enabled and query.history_rows:
            features[:, 3] = self._cooc_at(query, rows) / query.cooc_scale
        if "trending" in enabled:
            dense, scale = trend
            if scale > 0.0:
                features[:, 4] = np.log1p(dense[rows]) / math.log1p(scale)
        if "popularity" in enabled:
            dense, scale = self._popularity()
            if scale > 0.0:
                features[:, 5] = np.log1p(dense[rows]) / math.log1p(scale)
        return features

    def _rank(
        self,
        user_id: str,
        query: _Query,
        rows: np.ndarray,
        k: int,
        fill: np.ndarray,
        trend: tuple[np.ndarray, float],
    ) -> list[RecommendedItem]:
        """Fuse, re-rank with MMR, explain; top up from ``fill`` (allowed trending rows)."""
        items: list[RecommendedItem] = []
        picked: list[int] = []
        if len(rows):
            # Each feature over its largest magnitude among this user's candidates, so
            # the learned weights compare sources, not the sources' units.
            features = self._feature_matrix(query, rows, trend)
            scales = np.maximum(np.abs(features).max(axis=0), 1e-9)
            features /= scales
            contributions = features * self.fusion.weights
            fused = contributions.sum(axis=1)
            order = np.argsort(-fused, kind="stable")
            self._shown.pop(user_id, None)
            self._shown[user_id] = (rows[order[:_RANKED_KEPT]].astype(np.int32), scales)
            if len(self._shown) > _RANKINGS_KEPT:
                del self._shown[next(iter(self._shown))]
            for i in mmr(
                fused, self.catalog.embeddings[rows], k, self.settings.recommend.mmr_lambda
            ):
                row = int(rows[i])
                picked.append(row)
                items.append(
                    RecommendedItem(
                        self.catalog.item_ids[row],
                        float(fused[i]),
                        self._reason(query, row, contributions[i]),
                    )
                )
        if len(items) < k:
            taken = set(picked)
            for row in fill.tolist():
                if row not in taken:
                    items.append(RecommendedItem(self.catalog.item_ids[row], 0.0, "popular now"))
                    if len(items) == k:
                        break
        return items

    # ------------------------------------------------------------------ reasons

    def _reason(self, query: _Query, row: int, contribution: np.ndarray) -> str:
        """A sentence a person understands, from the feature that contributed most."""
        if not contribution.size or contribution.max() <= 0.0:
            return "popular now"
        best = FEATURES[int(np.argmax(contribution))]
        if best in ("trending", "popularity"):
            return "popular now"
        if best == "cooccurrence":
            return cooccurrence_reason(
                query.history_rows, query.history_weights, self.cooccurrence, self.catalog, row
            )
        if query.anchors is None:
            top = [] if query.state is None else self.label_model.top(query.state, 3)
            query.anchors = Anchors.of(query.state, self.catalog, [label for label, _ in top])
        return content_reason(query.anchors, self.catalog, row)

    # ------------------------------------------------------------------ users

    def interests(self, user_id: str, n: int = _INTERESTS_SHOWN) -> list[tuple[str, float]]:
        """The user's top readable interest labels with weights (shares, sum <= 1)."""
        state = self.users.get(user_id)
        return [] if state is None else self.label_model.top(state, n)

    def intent_of(self, user_id: str) -> Intent:
        """The latest text event's intent, or browse with low confidence when none."""
        state = self.users.get(user_id)
        label, confidence = state.intent if state is not None and state.intent else _NEUTRAL_INTENT
        return Intent(label, confidence)

    def export_user(self, user_id: str) -> bytes | None:
        """The user's compact serialised state (see :class:`UserState`), or None."""
        state = self.users.get(user_id)
        return None if state is None else state.to_bytes()

    def import_user(self, user_id: str, blob: bytes) -> None:
        """Restore a user from :meth:`export_user` bytes; raises ``StateFormatError``."""
        state = UserState.from_bytes(blob, dim=self.dim)
        state.user_id = user_id
        self.users[user_id] = state
        self._shown.pop(user_id, None)
        if state.last_ts is not None:
            self.now_ts = max(self.now_ts, state.last_ts)

    # ------------------------------------------------------------------ shared knowledge

    def take_item_signals(self) -> tuple[list[ItemSignal], list[FusionFeedback]]:
        """The item signals and fusion lessons of the events applied since the last call
        (empty unless built with ``emit_item_signals``)."""
        return ([], []) if self.outbox is None else self.outbox.take()

    def apply_item_knowledge(
        self, records: Sequence[ItemKnowledge], laid: Sequence[Laid | None] | None = None
    ) -> int:
        """Take the fleet's knowledge of some items (records of ``interest.items``): their
        neighbours, counts and trending replace what this engine held. ``laid`` (optional)
        are the records laid on this catalog's rows by another engine with the same rows.
        Returns how many were applied (stale or mismatched records are ignored, see
        :class:`KnowledgeView`)."""
        view = self.item_view
        if laid is None:
            applied = sum(1 for record in records if view.apply(record))
        else:
            applied = sum(
                1 for record, lay in zip(records, laid, strict=True) if view.apply(record, lay)
            )
        if applied:
            self._popularity_cache = None
        return applied

    def drop_item_knowledge(self, item_ids: Iterable[str]) -> None:
        """The aggregation deleted these items' knowledge (tombstones on ``interest.items``)."""
        for item_id in item_ids:
            self.item_view.remove(item_id)
        self._popularity_cache = None

    def load_fusion(self, record: ParamRecord) -> bool:
        """Rank with the fleet's fusion weights (a :data:`~interest_core.shared_fusion.
        FUSION_PARAM` record), then re-apply this engine's own lessons the record does not
        cover yet (by its watermarks), as for item knowledge. False when it does not fit."""
        values = np.asarray(record.values, dtype=np.float64)
        meta = record.meta
        try:
            iterate = np.asarray(meta.get("iterate", values), dtype=np.float64)
            updates = int(meta.get("updates", 0))
            marks = {int(p): int(o) for p, o in dict(meta.get("watermarks", {})).items()}
            if not np.isfinite(iterate).all():
                raise ValueError("non-finite iterate")
            self.fusion.load(values, iterate, updates)
        except (TypeError, ValueError):
            return False
        pending = [
            lesson
            for lesson in self._own_lessons
            if lesson.offset > marks.get(lesson.partition, -1)
        ]
        self._own_lessons = deque(pending, maxlen=self._own_lessons.maxlen)
        for lesson in pending:
            self.fusion.apply_gradient(np.asarray(lesson.gradient, dtype=np.float64))
        return True

    def forget_user(self, user_id: str) -> bool:
        """Drop everything held about the user; True when there was something."""
        self._shown.pop(user_id, None)
        return self.users.pop(user_id, None) is not None

    def evict_idle(self, older_than_ts: float) -> list[str]:
        """Drop users whose last activity is before ``older_than_ts``; returns their ids."""
        idle = [u for u, s in self.users.items() if s.active_at < older_than_ts]
        for user_id in idle:
            self.forget_user(user_id)
        return idle

    def describe_user(self, user_id: str) -> dict[str, Any] | None:
        """What the engine holds about a user, for people (``interest inspect``)."""
        state = self.users.get(user_id)
        if state is None:
            return None
        vocabulary = self._vocabulary()
        slot_weights = self.interest.slot_weights_at(state, self.now_ts)
        slots = []
        for direction, weight in zip(state.slot_dirs, slot_weights, strict=True):
            nearest = vocabulary.nearest(direction.astype(np.float32), top=3, min_cosine=-1.0)
            slots.append({"weight": round(weight, 4), "labels": [n for n, _ in nearest]})
        intent = self.intent_of(user_id)
        return {
            "user_id": user_id,
            "version": state.version,
            "last_event_ts": state.last_ts,
            "events_by_type": dict(sorted(state.counts.items())),
            "interests": [
                {"label": name, "weight": round(w, 4)} for name, w in self.interests(user_id)
            ],
            "slots": slots,
            "short_term_freshness": round(
                self.interest.short_term_freshness(state, self.now_ts), 4
            ),
            "intent": {"label": intent.label, "confidence": round(intent.confidence, 4)},
            "recent_items": [
                {"item_id": r.item_id, "ts": r.ts, "action": r.action}
                for r in list(state.recent)[-10:]
            ],
            "recent_texts": [t.text for t in state.texts],
            "state_bytes": len(state.to_bytes()),
        }

    def fusion_weights(self) -> dict[str, float]:
        """The learned fusion weights by feature name."""
        return self.fusion.as_dict()
