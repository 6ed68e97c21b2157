"""The prequential evaluation protocol (``interest eval``), pure: no I/O, no clock.

Events are replayed in time order. Before each positive event (purchase, add_to_cart,
click, or a rating of 4 or more) of a user who already has at least ``min_history``
events, the recommender is asked for that user's top-K over the whole catalog minus the
items the user has already interacted with (the exclusion is passed explicitly), and the
event's item is looked up in it. Then the event is applied. This is the "test, then
train" loop of streaming-recommender research (Vinagre et al., 2014).

Two positives are not scored, and are counted instead: an item the user has already
interacted with (it is excluded, so it could never be hit) and an item outside the
catalog (no recommender could propose it).

The recommender is anything with ``learn(events)`` and ``recommend(user_ids, k,
exclude)`` (:class:`Recommender`); the command line adapts the :class:`~interest_core.
engine.Engine` the workers run. Events between two asks are fed to ``learn`` in one
chunk. With ``max_lag_events > 0`` asks of different users may share one ``recommend``
call, each seeing the state before at most that many other users' events (the user's own
history is always complete); 0 (the default) is the exact protocol.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from interest_core.records import POSITIVE_RATING, Event, UserDeletion

__all__ = [
    "POSITIVE_RATING",
    "PrequentialResult",
    "Recommender",
    "TastePeriod",
    "TruthTimeline",
    "label_matches",
    "ndcg_gain",
    "order_events",
    "prequential",
    "sliding_mean",
    "taste_tracking",
]


class Recommender(Protocol):
    """What the protocol drives: online learning and top-K with an explicit exclusion."""

    def learn(self, events: Sequence[Event]) -> None:
        """Apply ``events`` (in the order given) to the model."""
        ...

    def recommend(
        self, user_ids: Sequence[str], k: int, exclude: Mapping[str, Collection[str]]
    ) -> Mapping[str, Sequence[str]]:
        """Top-``k`` item ids per user, best first, none of them in ``exclude[user]``."""
        ...


def ndcg_gain(rank: int) -> float:
    """NDCG of one relevant item at 1-based ``rank`` (0 means missed): 1 / log2(rank + 1)."""
    return 0.0 if rank <= 0 else 1.0 / math.log2(rank + 1)


def order_events(events: Iterable[Event]) -> list[Event]:
    """Events in time order; ties keep the log's order (a stable sort on ``ts``)."""
    return sorted(events, key=lambda event: event.ts)


def sliding_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (shorter at the start)."""
    if window <= 0:
        raise ValueError("window must be positive")
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


@dataclass
class PrequentialResult:
    """The scores of one recommender on one log.

    ``ranks`` holds, per evaluated event in order, the 1-based rank of the event's item
    in the top-K, or 0 when it was missed; ``event_ts`` their event times (unix seconds).
    """

    k: int
    catalog_size: int
    ranks: list[int] = field(default_factory=list)
    event_ts: list[float] = field(default_factory=list)
    recommended: set[str] = field(default_factory=set)
    events_total: int = 0
    positives: int = 0
    skipped_cold: int = 0
    skipped_repeat: int = 0
    skipped_unknown_item: int = 0
    exclusion_violations: int = 0
    asks: int = 0
    learn_calls: int = 0

    @property
    def evaluated(self) -> int:
        """Number of scored events."""
        return len(self.ranks)

    @property
    def hits(self) -> int:
        return sum(1 for rank in self.ranks if rank > 0)

    @property
    def hit_rate(self) -> float:
        """HR@K: share of scored events whose item was in the top-K."""
        return self.hits / self.evaluated if self.ranks else 0.0

    @property
    def ndcg(self) -> float:
        """NDCG@K with one relevant item per ask: mean of 1/log2(rank+1), 0 for a miss."""
        return sum(ndcg_gain(r) for r in self.ranks) / self.evaluated if self.ranks else 0.0

    @property
    def mrr(self) -> float:
        """MRR@K: mean of 1/rank, 0 for a miss."""
        return sum(1.0 / r for r in self.ranks if r > 0) / self.evaluated if self.ranks else 0.0

    @property
    def coverage(self) -> float:
        """Catalog coverage: distinct items ever recommended / catalog size."""
        return len(self.recommended) / self.catalog_size if self.catalog_size else 0.0

    def metrics(self) -> dict[str, Any]:
        """The reported numbers, JSON-ready."""
        return {
            f"hr@{self.k}": self.hit_rate,
            f"ndcg@{self.k}": self.ndcg,
            "mrr": self.mrr,
            "coverage": self.coverage,
            "evaluated": self.evaluated,
            "hits": self.hits,
            "distinct_recommended": len(self.recommended),
            "catalog_size": self.catalog_size,
            "events_total": self.events_total,
            "positives": self.positives,
            "skipped_cold": self.skipped_cold,
            "skipped_repeat": self.skipped_repeat,
            "skipped_unknown_item": self.skipped_unknown_item,
            "exclusion_violations": self.exclusion_violations,
            "asks": self.asks,
            "learn_calls": self.learn_calls,
        }


@dataclass
class _Ask:
    slot: int  # index into result.ranks
    user_id: str
    item_id: str
    exclude: frozenset[str]


class _Run:
    """One prequential pass: the events not yet learned, the asks not yet answered, and
    per user the events seen and the items interacted with."""

    def __init__(
        self,
        recommender: Recommender,
        result: PrequentialResult,
        catalog_ids: Collection[str],
        *,
        min_history: int,
        max_lag_events: int,
        max_chunk_events: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.recommender = recommender
        self.result = result
        self.catalog_ids = catalog_ids
        self.min_history = min_history
        self.max_lag_events = max_lag_events
        self.max_chunk_events = max_chunk_events
        self.progress = progress
        self.history: dict[str, int] = {}
        self.seen: dict[str, set[str]] = {}
        self.pending: list[Event] = []
        self.pending_users: set[str] = set()
        self.asks: list[_Ask] = []

    def flush(self) -> None:
        """Answer the waiting asks (one ``recommend`` call), then learn the pending events
        (one ``learn`` call)."""
        result, k = self.result, self.result.k
        if self.asks:
            asks = self.asks
            answers = self.recommender.recommend(
                [a.user_id for a in asks], k, {a.user_id: a.exclude for a in asks}
            )
            result.asks += len(asks)
            for ask in asks:
                listed = list(answers.get(ask.user_id, ()))[:k]
                kept = [i for i in listed if i not in ask.exclude]
                result.exclusion_violations += len(listed) - len(kept)
                result.recommended.update(kept)
                if ask.item_id in kept:
                    result.ranks[ask.slot] = kept.index(ask.item_id) + 1
            asks.clear()
        if self.pending:
            self.recommender.learn(list(self.pending))
            result.learn_calls += 1
            if self.progress is not None:
                self.progress(len(self.pending))
            self.pending.clear()
            self.pending_users.clear()

    def step(self, event: Event) -> None:
        """Score ``event`` if it is a positive the protocol asks about, then queue it."""
        result = self.result
        result.events_total += 1
        user = event.user_id
        deletion = isinstance(event, UserDeletion)
        if deletion:
            # Everything about the user is gone: history starts again from nothing.
            self.history.pop(user, None)
            self.seen.pop(user, None)
        elif event.is_positive and event.item_id is not None:
            self._ask(user, event.item_id, event.ts)
        if not deletion:
            self.history[user] = self.history.get(user, 0) + 1
            if event.item_id is not None:
                self.seen.setdefault(user, set()).add(event.item_id)
        self.pending.append(event)
        self.pending_users.add(user)
        if len(self.pending) >= self.max_chunk_events:
            self.flush()

    def _ask(self, user: str, item_id: str, ts: float) -> None:
        """A positive event: skipped (cold user, unknown or repeated item) or an ask."""
        result = self.result
        result.positives += 1
        user_seen = self.seen.get(user, set())
        if self.history.get(user, 0) < self.min_history:
            result.skipped_cold += 1
        elif item_id not in self.catalog_ids:
            result.skipped_unknown_item += 1
        elif item_id in user_seen:
            result.skipped_repeat += 1
        else:
            # The ask must see every earlier event of this user, and at most
            # max_lag_events earlier events of others.
            pending = self.pending
            if pending and (len(pending) > self.max_lag_events or user in self.pending_users):
                self.flush()
            result.ranks.append(0)
            result.event_ts.append(ts)
            self.asks.append(_Ask(len(result.ranks) - 1, user, item_id, frozenset(user_seen)))


def prequential(
    events: Iterable[Event],
    recommender: Recommender,
    *,
    catalog: Collection[str],
    k: int = 10,
    min_history: int = 5,
    max_lag_events: int = 0,
    max_chunk_events: int = 4096,
    checkpoints: Sequence[float] = (),
    on_checkpoint: Callable[[float], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PrequentialResult:
    """Run the prequential protocol of ``recommender`` over ``events``.

    ``catalog`` is the set of item ids that can be recommended; ``k`` the list length
    (items); ``min_history`` the events a user needs before being scored;
    ``max_lag_events`` how many other users' events an ask may miss (0: exact);
    ``max_chunk_events`` caps one ``learn`` call. ``on_checkpoint(t)`` is called, with
    exactly the events of time < ``t`` applied, for each ``t`` in ``checkpoints``
    (unix seconds, ascending). ``progress(n)`` reports ``n`` more events processed.
    """
    if k <= 0:
        raise ValueError("k must be positive")
    if min_history < 0 or max_lag_events < 0 or max_chunk_events <= 0:
        raise ValueError("min_history and max_lag_events must be >= 0, max_chunk_events > 0")
    ordered = order_events(events)
    catalog_ids = catalog if isinstance(catalog, set | frozenset) else set(catalog)
    result = PrequentialResult(k=k, catalog_size=len(catalog_ids))
    run = _Run(
        recommender,
        result,
        catalog_ids,
        min_history=min_history,
        max_lag_events=max_lag_events,
        max_chunk_events=max_chunk_events,
        progress=progress,
    )
    todo_checkpoints = sorted(checkpoints)
    for event in ordered:
        while todo_checkpoints and event.ts >= todo_checkpoints[0]:
            run.flush()
            if on_checkpoint is not None:
                on_checkpoint(todo_checkpoints[0])
            todo_checkpoints.pop(0)
        run.step(event)
    run.flush()
    for t in todo_checkpoints:
        if on_checkpoint is not None:
            on_checkpoint(t)
    return result


# --------------------------------------------------------------------------- taste tracking


@dataclass(frozen=True)
class TastePeriod:
    """Over ``[from_ts, to_ts)`` (unix seconds) ``user_id`` truly holds ``tastes``.

    ``weights`` go with ``tastes`` (same order); the strongest taste is ``dominant``
    when it is strictly stronger than the others.
    """

    user_id: str
    from_ts: float
    to_ts: float
    tastes: tuple[str, ...]
    weights: tuple[float, ...] = ()

    @property
    def dominant(self) -> str | None:
        if not self.tastes:
            return None
        if len(self.weights) != len(self.tastes):
            return self.tastes[0] if len(self.tastes) == 1 else None
        ranked = sorted(zip(self.weights, self.tastes, strict=True), reverse=True)
        if len(ranked) == 1 or ranked[0][0] > ranked[1][0]:
            return ranked[0][1]
        return None


class TruthTimeline:
    """Each user's true tastes over time, from a generator's ground truth."""

    def __init__(self, periods: Iterable[TastePeriod]) -> None:
        self._by_user: dict[str, list[TastePeriod]] = {}
        for period in sorted(periods, key=lambda p: (p.user_id, p.from_ts)):
            self._by_user.setdefault(period.user_id, []).append(period)

    @property
    def users(self) -> list[str]:
        return sorted(self._by_user)

    def period_at(self, user_id: str, ts: float) -> TastePeriod | None:
        """The period in force for the user at ``ts`` (None outside every period)."""
        for period in self._by_user.get(user_id, ()):
            if period.from_ts <= ts < period.to_ts:
                return period
        return None

    def drifts(self) -> list[tuple[TastePeriod, TastePeriod]]:
        """Every (old, new) pair of consecutive periods of a user whose tastes differ."""
        return [
            (old, new)
            for periods in self._by_user.values()
            for old, new in itertools.pairwise(periods)
            if set(old.tastes) != set(new.tastes)
        ]

    def span(self) -> tuple[float, float]:
        """First ``from_ts`` and last ``to_ts`` over all users (unix seconds)."""
        periods = [p for ps in self._by_user.values() for p in ps]
        if not periods:
            return (0.0, 0.0)
        return (min(p.from_ts for p in periods), max(p.to_ts for p in periods))


def _norm(label: str) -> str:
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def label_matches(label: str | None, taste: str) -> bool:
    """A captured interest label names the taste: case- and separator-insensitive
    containment either way ("Sci-Fi" ~ "sci fi movies")."""
    if not label:
        return False
    got, want = _norm(label), _norm(taste)
    return bool(got) and (want in got or got in want)


def _matches_any(label: str | None, tastes: Iterable[str]) -> bool:
    return any(label_matches(label, taste) for taste in tastes)


def taste_tracking(
    truth: TruthTimeline, snapshots: Mapping[float, Mapping[str, str | None]]
) -> dict[str, Any]:
    """How closely captured top-interest labels follow the true tastes over time.

    ``snapshots[t][user]`` is the user's captured top interest label at time ``t`` (unix
    seconds; None: nothing held). Returns, JSON-ready:

    - ``over_time``: per snapshot, users with a label and the share whose label is one
      of their current true tastes (``in_current``);
    - ``drift``: per drift point (a user's tastes change at time d), judged on the last
      snapshot before d (``before``) and the last snapshot before the next change
      (``after``): share whose label was a current taste before; share whose label is
      the new taste after (``after_new``), a current taste after (``after_current``), and
      still a dropped taste after (``after_stale``). ``drifts`` counts the drift points
      with a labelled snapshot on both sides.
    """
    times = sorted(snapshots)
    over_time = []
    for t in times:
        users = matched = 0
        for user, label in snapshots[t].items():
            period = truth.period_at(user, t)
            if period is None or not label:
                continue
            users += 1
            matched += _matches_any(label, period.tastes)
        over_time.append({"ts": t, "users": users, "in_current": matched / users if users else 0.0})
    counted = before_ok = after_new = after_current = after_stale = 0
    for old, new in truth.drifts():
        user = new.user_id
        before = [t for t in times if old.from_ts <= t < new.from_ts]
        after = [t for t in times if new.from_ts < t < new.to_ts]
        if not before or not after:
            continue
        label_before = snapshots[before[-1]].get(user)
        label_after = snapshots[after[-1]].get(user)
        if not label_before or not label_after:
            continue
        added = [t for t in new.tastes if t not in old.tastes]
        dropped = [t for t in old.tastes if t not in new.tastes]
        counted += 1
        before_ok += _matches_any(label_before, old.tastes)
        after_new += _matches_any(label_after, added)
        after_current += _matches_any(label_after, new.tastes)
        after_stale += _matches_any(label_after, dropped)

    def share(n: int) -> float:
        return n / counted if counted else 0.0

    return {
        "over_time": over_time,
        "drift": {
            "drifts": counted,
            "before_in_current": share(before_ok),
            "after_new": share(after_new),
            "after_current": share(after_current),
            "after_stale": share(after_stale),
        },
    }
