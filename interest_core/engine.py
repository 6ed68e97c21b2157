"""The Engine: the one facade the worker and the evaluation both call.

``process(events)`` is the worker's call: bad item references come back as rejected
values, the batch's distinct texts are redacted and encoded in one encoder call, events
are applied in order per user (replays skipped), then all touched users get fresh
recommendations from one batched index search. ``learn`` / ``recommend`` split the same
work for the prequential evaluation. The engine also keeps the user registry (import,
export, forget, evict) and the catalog (upsert, delete).

The work itself lives in one module per idea: :mod:`~interest_core.candidates` (where
candidates come from), :mod:`~interest_core.ranking` (features, fusion, diversity,
reasons), :mod:`~interest_core.knowledge` (what is learned about items from everyone),
:mod:`~interest_core.interest` (what is learned about one user),
:mod:`~interest_core.describe` (a user for people) and
:mod:`~interest_core.strategies` (which sources and features each strategy uses). The
engine's own plumbing is split the same way: :mod:`~interest_core.query_texts` (a batch's
texts, one encoder call), :mod:`~interest_core.pending` (queued interest updates),
:mod:`~interest_core.batch_search` (recommendations for many users at once) and
:mod:`~interest_core.fleet_link` (the item-keyed stage's signals and knowledge).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from interest_core import cooccurrence
from interest_core.adapter import AdapterWeights, ItemSpace, example_queries
from interest_core.batch_search import BatchSearch
from interest_core.candidates import Candidates, Clock
from interest_core.catalog import Catalog
from interest_core.describe import INTERESTS_SHOWN, describe_state, intent_of
from interest_core.encoder import Encoder
from interest_core.fleet_link import FleetLink
from interest_core.fusion import FusionWeights
from interest_core.index import ItemIndex
from interest_core.interest import InterestModel, RecentItem, UserState
from interest_core.item_knowledge import ItemRecord
from interest_core.item_signals import FusionFeedback, ItemSignal
from interest_core.item_view import Laid
from interest_core.knowledge import ItemKnowledge
from interest_core.labels import LabelModel, LabelVocabulary
from interest_core.params import ParamRecord
from interest_core.pending import PendingUpdates
from interest_core.query_texts import QueryTexts
from interest_core.ranking import Ranker
from interest_core.records import (
    CatalogItem,
    Event,
    Intent,
    InterestLabel,
    Recommendation,
    RecommendedItem,
    Rejected,
    UserDeletion,
)
from interest_core.redact import redact
from interest_core.settings import Settings
from interest_core.signals import event_weight
from interest_core.strategies import FEATURES, STRATEGIES, features_of

__all__ = ["FEATURES", "INITIAL_FUSION", "STRATEGIES", "BatchOutcome", "BatchStats", "Engine"]

log = logging.getLogger(__name__)

_SEEN_LIMIT = 1000  # items remembered per user for "already consumed" filtering
# Neutral start per source: the three content cosines share one source's weight.
INITIAL_FUSION = (1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1.0, 0.0, 1.0)
_blas_limited = False
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
    """What a ``process`` call produced; the worker publishes and commits from it.

    ``rejected`` holds the position of each rejected event in the ``events`` given, with
    the reason, so the caller finds the record it came from without searching.
    """

    recommendations: list[Recommendation]
    rejected: list[tuple[int, Rejected]]
    changed_users: list[str]
    deleted_users: list[str]
    duplicates: int
    stats: BatchStats = field(default_factory=BatchStats)


@dataclass
class _Applied:
    """The users a batch touched: their triggering event and newest event time."""

    touched: dict[str, Event] = field(default_factory=dict)
    event_ts: dict[str, float] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    duplicates: int = 0
    applied: int = 0


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


def split_unknown_items(
    events: Sequence[Event], catalog: Catalog
) -> tuple[list[tuple[int, Rejected]], list[Event]]:
    """Split off events naming an item ``catalog`` does not hold: their positions in
    ``events`` with the reason, and the valid events in order."""
    rejected: list[tuple[int, Rejected]] = []
    valid: list[Event] = []
    for position, event in enumerate(events):
        if (
            not isinstance(event, UserDeletion)
            and event.item_id is not None
            and catalog.row(event.item_id) is None
        ):
            detail = f"unknown item {event.item_id[:80]!r}"
            rejected.append((position, Rejected("unknown_item", detail, event.to_json())))
        else:
            valid.append(event)
    return rejected, valid


def action_of(event: Event) -> str:
    """What the user did, in words a reason can quote ("rated 4.5", "bought")."""
    if event.type == "rate":
        rating = event.rating if event.rating is not None else 0.0
        return f"rated {rating:g}"
    return _ACTIONS.get(event.type, event.type)


class Engine:
    """The interest model and hybrid recommender over one catalog (no I/O).

    ``encoder`` turns texts into unit vectors; ``settings`` supplies model, index and
    recommendation hyper-parameters; ``strategy`` is one of :data:`STRATEGIES`;
    ``model_name`` is reported in records (default: the encoder's name); ``knowledge``
    is the item knowledge to learn into and read from (default: a fresh one of its own).
    With ``emit_item_signals`` the engine also records what each applied event teaches
    about items (:attr:`outbox`, for the item-keyed stage) and takes the fleet's
    knowledge back (:meth:`apply_item_knowledge`).
    """

    def __init__(
        self,
        encoder: Encoder,
        settings: Settings,
        *,
        strategy: str = "hybrid",
        model_name: str | None = None,
        knowledge: ItemKnowledge | None = None,
        emit_item_signals: bool = False,
    ) -> None:
        self.features = features_of(strategy)
        _one_blas_thread()
        self.encoder = encoder
        self.texts = QueryTexts(encoder, settings.encoder)  # the events' own texts
        self.settings = settings
        self.strategy = strategy
        self.model_name = model_name or encoder.name
        self.dim = encoder.dim
        rec = settings.recommend
        self.catalog = Catalog(self.dim)
        self.index = ItemIndex.configured(self.dim, settings.index)
        self.knowledge = knowledge or ItemKnowledge(
            rec.trending_half_life_s,
            # The same count on the long-term horizon: an item prior for the fusion.
            settings.model.long_term_half_life_s,
            learn_pairs="cooccurrence" in self.features,
            learn_popularity="popularity" in self.features,
            background_pairs=settings.runtime.cooccurrence_thread,
        )
        self.fusion = FusionWeights(
            FEATURES, self.features, learning_rate=rec.fusion_learning_rate, initial=INITIAL_FUSION
        )
        #: The item-keyed stage: signals out (:attr:`outbox`), the fleet's knowledge in.
        self.fleet = FleetLink(self.catalog, self.knowledge, self.fusion, emit=emit_item_signals)
        self.item_view = self.fleet.view
        self.outbox = self.fleet.outbox
        self.interest = InterestModel(
            settings.model,
            use_slots="slot" in self.features,
            use_short_term="short_term" in self.features,
            long_term_half_life_s=math.inf if strategy == "static" else None,
        )
        self.interest.warm_up()  # and the other compiled loops: the first batch pays none
        cooccurrence.warm_up()
        self.label_model = LabelModel(settings.model.long_term_half_life_s)
        self.vocabulary = LabelVocabulary()
        self._labels_dirty = True
        self.users: dict[str, UserState] = {}
        # A user's interest updates: one compiled run before anything reads them.
        self._pending = PendingUpdates(self.interest, self.users)
        self.clock = Clock()
        self.space = ItemSpace(self.catalog, self.model_name)  # the adaptation layer
        #: Gets (raw query vectors, row) before each positive item event: training examples.
        self.on_example: Callable[[np.ndarray, int], None] | None = None
        self.on_applied: Callable[[], None] | None = None  # a batch applied, nothing read yet
        self.candidates = Candidates(
            self.catalog,
            self.index,
            self.knowledge,
            self.interest,
            self.fusion,
            self.clock,
            self.features,
            rec,
            self.space,
        )
        self.ranker = Ranker(self.catalog, self.candidates, self.fusion, self.label_model, rec)
        self.space.on_switch = self.ranker.forget_all
        self.search = BatchSearch(self.users, self.candidates, self.ranker)

    @property
    def now_ts(self) -> float:
        """The newest event time seen (unix seconds): the clock of all decay."""
        return self.clock.now_ts

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
        self.index.upsert(rows, vectors)  # raw vectors, whatever the layer
        self.space.updated(rows, vectors)
        self._labels_dirty = True
        self.candidates.popularity.invalidate()
        if len(self.item_view):  # records naming these items can now be laid on rows
            self.fleet.remap([item.item_id for item, _ in changed])

    def delete_items(self, item_ids: Iterable[str]) -> None:
        """Remove items from the catalog, the index and the item knowledge. They never
        come back in a recommendation unless the catalog publishes them again."""
        rows = [r for r in (self.catalog.remove(i) for i in item_ids) if r is not None]
        if not rows:
            return
        self.index.delete(rows)
        self.space.removed(rows)
        self.knowledge.remove(rows)
        self.candidates.popularity.invalidate()
        self._labels_dirty = True

    def set_adapter(self, weights: AdapterWeights) -> str | None:
        """Put ``weights`` in use at once (:meth:`ItemSpace.use`); the reason if refused."""
        return self.space.use(weights)

    def prepare_texts(self) -> None:
        """Encode now what the first batch with a text would: the catalog's label names
        (new ones only) and the intent prototypes (240 ms on a CPU thread, default model)."""
        self._vocabulary()
        self.texts.intent_model()

    def _vocabulary(self) -> LabelVocabulary:
        if self._labels_dirty:
            labels = {
                label for row in self.catalog.row_of.values() for label in self.catalog.labels[row]
            }
            self.vocabulary.refresh(sorted(labels), self.encoder)
            self._labels_dirty = False
        return self.vocabulary

    # ------------------------------------------------------------------ events

    def process(
        self, events: Sequence[Event], *, published_at: float | None = None
    ) -> BatchOutcome:
        """Apply a micro-batch and return one fresh Recommendation per touched user.

        ``published_at`` (wall-clock seconds) is stamped on the records and used as the
        users' last activity; it defaults to the newest event time.
        """
        hits0, misses0, encoded0 = self.texts.cache_counters()
        rejected, valid = split_unknown_items(events, self.catalog)
        t0 = time.perf_counter()
        vectors, intents = self.texts.encode(valid)
        t1 = time.perf_counter()
        batch = self._apply_batch(valid, vectors, intents, published_at)
        t2 = time.perf_counter()
        if self.on_applied is not None:
            self.on_applied()
        user_ids = list(batch.touched)
        timings: dict[str, float] = {}
        ranked = self.search.recommend(user_ids, self.settings.recommend.k, True, None, timings)
        stamp = published_at if published_at is not None else self.now_ts
        recommendations = [
            self._recommendation(user_id, batch, ranked.get(user_id, []), stamp)
            for user_id in user_ids
        ]
        hits1, misses1, encoded1 = self.texts.cache_counters()
        stats = BatchStats(
            encode_s=t1 - t0,
            update_s=t2 - t1,
            search_s=timings.get("search_s", 0.0),
            rank_s=timings.get("rank_s", 0.0),
            texts_encoded=encoded1 - encoded0,
            cache_hits=hits1 - hits0,
            cache_misses=misses1 - misses0,
            events_applied=batch.applied,
        )
        return BatchOutcome(
            recommendations=recommendations,
            rejected=rejected,
            changed_users=user_ids,
            deleted_users=[u for u in dict.fromkeys(batch.deleted) if u not in batch.touched],
            duplicates=batch.duplicates,
            stats=stats,
        )

    def _apply_batch(
        self,
        valid: Sequence[Event],
        vectors: Mapping[str, np.ndarray],
        intents: Mapping[str, tuple[str, float]],
        published_at: float | None,
    ) -> _Applied:
        """Apply validated events in order; deletions forget the user at once."""
        batch = _Applied()
        try:
            for event in valid:
                if isinstance(event, UserDeletion):
                    self.forget_user(event.user_id)
                    batch.touched.pop(event.user_id, None)
                    batch.deleted.append(event.user_id)
                    continue
                if not self._apply(event, vectors, intents, published_at):
                    batch.duplicates += 1
                    continue
                batch.applied += 1
                batch.touched[event.user_id] = event
                newest = max(batch.event_ts.get(event.user_id, event.ts), event.ts)
                batch.event_ts[event.user_id] = newest
        finally:  # what was applied is complete even when an event failed
            self._pending.apply()
            self.knowledge.cooccurrence.hand_over()  # applied during the content search
        return batch

    def _recommendation(
        self, user_id: str, batch: _Applied, items: list[RecommendedItem], stamp: float
    ) -> Recommendation:
        """The user's next versioned record."""
        state = self.users[user_id]
        state.version += 1
        return Recommendation(
            user_id=user_id,
            version=state.version,
            event_ts=batch.event_ts[user_id],
            published_at=stamp,
            trigger_event_id=batch.touched[user_id].event_id,
            items=tuple(items),
            interests=tuple(InterestLabel(name, w) for name, w in self.interests(user_id)),
            intent=self.intent_of(user_id),
            model=self.model_name,
            model_version=self.space.version,
        )

    def learn(self, events: Sequence[Event]) -> None:
        """Apply events without recommending (the evaluation's update step). Events naming
        unknown items are skipped; replays are ignored."""
        _, valid = split_unknown_items(events, self.catalog)
        vectors, intents = self.texts.encode(valid)
        try:
            for event in valid:
                if isinstance(event, UserDeletion):
                    self.forget_user(event.user_id)
                else:
                    self._apply(event, vectors, intents, None)
        finally:
            self._pending.apply()

    def _apply(
        self,
        event: Event,
        vectors: Mapping[str, np.ndarray],
        intents: Mapping[str, tuple[str, float]],
        active_at: float | None,
    ) -> bool:
        """Apply one event to its user, the item knowledge and the fusion weights; False
        for a replay (already applied)."""
        state = self.users.get(event.user_id)
        if state is None:
            state = self.users[event.user_id] = UserState(event.user_id, self.dim)
        elif state.already_applied(event.event_id, event.offset):
            return False
        ts = event.ts
        self.clock.now_ts = max(self.clock.now_ts, ts)
        self.clock.events_seen += 1
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
            self._apply_item(state, event, weight, ts, self.fleet.source(event))
        if text is not None and text in vectors:
            vector = vectors[text]
            text_weight = weight if event.type in ("search", "chat") else 0.5 * max(weight, 0.0)
            self._pending.defer(state.user_id, vector, text_weight, ts)
            self.label_model.add_text(state, self._vocabulary().nearest(vector), text_weight, ts)
            state.remember_text(text, vector, ts)
            if intent is not None:
                state.intent = intent
        state.mark_applied(event.event_id, event.offset, event.type, ts)
        state.active_at = active_at if active_at is not None else max(state.active_at, ts)
        return True

    def _apply_item(
        self, state: UserState, event: Event, weight: float, ts: float, source: tuple[int, int]
    ) -> None:
        """The item part of an event: fusion step, item knowledge, interest, labels;
        ``source`` names the event in the signals it emits (events partition, offset)."""
        assert event.item_id is not None
        row = self.catalog.row(event.item_id)
        assert row is not None  # validated
        if weight > 0.0 and self.fusion.learns and self.ranker.teaches(state.user_id, row):
            self.fleet.lesson(self.ranker.learn(state.user_id, row), source)
        if weight > 0.0 and self.on_example:
            self._pending.apply(state.user_id)  # the example is the state before this event
            item = self.catalog.embeddings[row]
            if (queries := example_queries(state, self.dim, item)).any():
                self.on_example(queries, row)
        before = int(self.knowledge.cooccurrence.count_of(row))  # how new the item is
        if weight > 0.0:
            history = self.candidates.history_rows(state) if "cooccurrence" in self.features else []
            self.knowledge.observe(row, weight, ts, history)
            self.fleet.positive(row, history, weight=weight, ts=ts, source=source)
        self._pending.defer(state.user_id, self.catalog.embeddings[row], weight, ts)
        self.label_model.add_item(state, self.catalog.labels[row], weight, ts)
        item = RecentItem(event.item_id, ts, weight, action_of(event), before)
        state.remember_item(
            item, self.settings.model.recent_items, _SEEN_LIMIT, row, self.catalog.layout
        )

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
        return self.search.recommend(list(dict.fromkeys(user_ids)), k, exclude_seen, exclude, {})

    # ------------------------------------------------------------------ users

    def interests(self, user_id: str, n: int = INTERESTS_SHOWN) -> list[tuple[str, float]]:
        """The user's top readable interest labels with weights (shares, sum <= 1)."""
        state = self.users.get(user_id)
        return [] if state is None else self.label_model.top(state, n)

    def intent_of(self, user_id: str) -> Intent:
        """The latest text event's intent, or browse with low confidence when none."""
        return intent_of(self.users.get(user_id))

    def export_user(self, user_id: str) -> bytes | None:
        """The user's compact serialised state (see :class:`UserState`), or None."""
        state = self.users.get(user_id)
        return None if state is None else state.to_bytes()

    def import_user(self, user_id: str, blob: bytes) -> None:
        """Restore a user from :meth:`export_user` bytes; raises ``StateFormatError``."""
        state = UserState.from_bytes(blob, dim=self.dim)
        state.user_id = user_id
        self.users[user_id] = state
        self.ranker.forget(user_id)
        if state.last_ts is not None:
            self.clock.now_ts = max(self.clock.now_ts, state.last_ts)

    def forget_user(self, user_id: str) -> bool:
        """Drop everything held about the user; True when there was something."""
        self.ranker.forget(user_id)
        self._pending.drop(user_id)
        self.candidates.windows.forget(user_id)
        return self.users.pop(user_id, None) is not None

    def evict_idle(self, older_than_ts: float) -> list[str]:
        """Drop users whose last activity is before ``older_than_ts``; returns their ids."""
        idle = [u for u, s in self.users.items() if s.active_at < older_than_ts]
        for user_id in idle:
            self.forget_user(user_id)
        return idle

    def evict_least_active(self, max_users: int) -> list[str]:
        """Drop the least recently active users beyond ``max_users``; returns their ids
        (oldest activity first, ties by id)."""
        extra = len(self.users) - max(max_users, 0)
        if extra <= 0:
            return []
        oldest = heapq.nsmallest(extra, self.users.items(), key=lambda kv: (kv[1].active_at, kv[0]))
        for user_id, _ in oldest:
            self.forget_user(user_id)
        return [user_id for user_id, _ in oldest]

    def describe_user(self, user_id: str) -> dict[str, Any] | None:
        """What the engine holds about a user, for people (see :mod:`.describe`)."""
        state = self.users.get(user_id)
        if state is None:
            return None
        return describe_state(
            state,
            self.settings.model,
            now_ts=self.now_ts,
            interest=self.interest,
            labels=self.label_model,
            vocabulary=self._vocabulary(),
        )

    def fusion_weights(self) -> dict[str, float]:
        """The learned fusion weights by feature name."""
        return self.fusion.as_dict()

    # ------------------------------------------------------------------ shared knowledge

    def take_item_signals(self) -> tuple[Sequence[ItemSignal], list[FusionFeedback]]:
        """The item signals and fusion lessons of the events applied since the last call
        (empty unless built with ``emit_item_signals``): one own-item signal per positive
        event, which stands for its partners' too
        (:func:`~interest_core.item_signals.expand_signals`)."""
        return self.fleet.take()

    def apply_item_knowledge(
        self, records: Sequence[ItemRecord], laid: Sequence[Laid | None] | None = None
    ) -> int:
        """Take the fleet's knowledge of some items (records of ``interest.items``): their
        neighbours, counts and trending replace what this engine held, its own newer
        events on top. ``laid`` (optional) are the records laid on this catalog's rows by
        an engine with the same rows. Returns how many were applied (stale or mismatched
        records are ignored, see :class:`KnowledgeView`)."""
        applied = self.fleet.apply(records, laid)
        if applied:
            self.candidates.popularity.invalidate()
        return applied

    def drop_item_knowledge(self, item_ids: Iterable[str]) -> None:
        """The aggregation deleted these items' knowledge (tombstones on ``interest.items``)."""
        self.fleet.drop(item_ids)
        self.candidates.popularity.invalidate()

    def load_fusion(self, record: ParamRecord) -> bool:
        """Rank with the fleet's fusion weights (a :data:`~interest_core.shared_fusion.
        FUSION_PARAM` record), then re-apply this engine's own lessons the record does not
        cover yet (by its watermarks), as for item knowledge. False when it does not fit."""
        return self.fleet.load_fusion(record)
