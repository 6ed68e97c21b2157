"""The deployed topology, offline: N user-keyed engines sharing item knowledge with a lag.

``interest eval --workers N`` drives a :class:`FleetRecommender` instead of one engine.
Events are routed to engines by ``route(user_id)`` (the command line passes the
producer's partitioner: kafka-python's murmur2 of the key, modulo N), each engine
applies its users' events and emits item signals, and the signals go through the same
:class:`~interest_core.item_knowledge.KnowledgeFold` (and
:class:`~interest_core.shared_fusion.SharedFusion`) the aggregation runs. What the fold
publishes reaches every engine late, as through Kafka: every ``publish_every`` events
it publishes the knowledge of all events but the last ``lag_events`` (so an engine's
view of other engines' events is between ``lag_events`` and ``lag_events +
publish_every`` events old); each engine always sees its own events at once (see
:class:`~interest_core.item_view.KnowledgeView`).

Events get the identity a worker gives them: partition = the engine's index, offset =
their position in the log, so exactly-once holds as in the deployed system. Pure: no
Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from interest_core.item_knowledge import KnowledgeFold
from interest_core.item_signals import FusionFeedback, ItemSignal, expand_signals
from interest_core.records import Event
from interest_core.shared_fusion import SharedFusion

__all__ = ["FleetRecommender"]


class FleetRecommender:
    """N engines (built with ``emit_item_signals``) behind the evaluation's recommender
    protocol (``learn`` / ``recommend``), sharing item knowledge through ``fold``.

    ``fusion`` learns the fusion weights from every engine's lessons (None: each engine
    keeps its own). ``lag_events`` >= 0 and ``publish_every`` >= 1 are in events.
    """

    def __init__(
        self,
        engines: Sequence[Any],
        route: Callable[[str], int],
        fold: KnowledgeFold,
        *,
        fusion: SharedFusion | None = None,
        lag_events: int = 1000,
        publish_every: int | None = None,
    ) -> None:
        if not engines:
            raise ValueError("at least one engine")
        if lag_events < 0:
            raise ValueError("lag_events must be >= 0")
        self.engines = list(engines)
        first = self.engines[0].catalog.item_ids
        # Engines loaded with the same catalog share its row layout: lay records once.
        self._same_rows = all(e.catalog.item_ids == first for e in self.engines[1:])
        self.route = route
        self.fold = fold
        self.fusion = fusion
        self.lag_events = lag_events
        self.publish_every = max(1, publish_every or max(1, lag_events // 2))
        self.position = 0  # events learned so far (the next event's offset)
        self._queue: deque[ItemSignal | FusionFeedback] = deque()
        self._next_publish = self.publish_every
        self.publications = 0
        self.records_published = 0
        self.routed = [0] * len(self.engines)

    def engine_of(self, user_id: str) -> Any:
        """The engine that owns ``user_id``."""
        return self.engines[self.route(user_id) % len(self.engines)]

    def learn(self, events: Sequence[Event]) -> None:
        """Apply ``events`` in order, each on its user's engine; publish knowledge on the
        schedule."""
        by_engine: dict[int, list[Event]] = {}
        for event in events:
            index = self.route(event.user_id) % len(self.engines)
            by_engine.setdefault(index, []).append(
                replace(event, partition=index, offset=self.position)
            )
            self.position += 1
            self.routed[index] += 1
        emitted: list[ItemSignal | FusionFeedback] = []
        for index, mine in by_engine.items():
            engine = self.engines[index]
            engine.learn(mine)
            signals, lessons = engine.take_item_signals()
            emitted += expand_signals(signals)
            emitted += lessons
        # Into the aggregation's input in log order (per partition, offsets only grow).
        emitted.sort(key=lambda s: s.offset)
        self._queue.extend(emitted)
        while self.position >= self._next_publish:
            self._publish(self._next_publish - self.lag_events)
            self._next_publish += self.publish_every

    def _publish(self, through: int) -> None:
        """Fold everything emitted by events before offset ``through``; publish."""
        queue = self._queue
        while queue and queue[0].offset < through:
            item = queue.popleft()
            if isinstance(item, ItemSignal):
                self.fold.apply(item)
            elif self.fusion is not None:
                self.fusion.apply(item)
        changed, removed = self.fold.take_changed()
        param = None
        if self.fusion is not None and self.fusion.dirty:
            param = self.fusion.to_param(created_at=0.0)
        laid = None
        if changed and self._same_rows:
            view = self.engines[0].item_view
            laid = [view.lay(record) for record in changed]
        for engine in self.engines:
            if changed:
                engine.apply_item_knowledge(changed, laid)
            if removed:
                engine.drop_item_knowledge(removed)
            if param is not None:
                engine.load_fusion(param)
        self.publications += 1
        self.records_published += len(changed) + len(removed)

    def recommend(
        self, user_ids: Sequence[str], k: int, exclude: Mapping[str, Collection[str]]
    ) -> dict[str, list[str]]:
        """Top-``k`` per user from the user's own engine."""
        by_engine: dict[int, list[str]] = {}
        for user_id in user_ids:
            by_engine.setdefault(self.route(user_id) % len(self.engines), []).append(user_id)
        out: dict[str, list[str]] = {}
        for index, users in by_engine.items():
            answers = self.engines[index].recommend(users, k, exclude=exclude)
            out.update(
                {user: [item.item_id for item in listed] for user, listed in answers.items()}
            )
        return out

    def top_label(self, user_id: str) -> str | None:
        """The label of the user's heaviest captured interest, from the user's engine."""
        top = self.engine_of(user_id).interests(user_id, 1)
        return str(top[0][0]) if top else None

    def describe(self) -> dict[str, Any]:
        """What the run did, for ``report.json``."""
        return {
            "workers": len(self.engines),
            "item_lag_events": self.lag_events,
            "publish_every_events": self.publish_every,
            "events_per_worker": list(self.routed),
            "publications": self.publications,
            "item_records_published": self.records_published,
            "items_known": len(self.fold.items),
            "fusion_updates": None if self.fusion is None else self.fusion.fusion.updates,
        }
