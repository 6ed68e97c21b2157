"""A worker's view of what the fleet learned: ``interest.items`` and ``interest.models``.

Every worker follows both compacted topics whole, from the beginning and then live (as
the catalog): item records go to :meth:`Engine.apply_item_knowledge` (tombstones to
:meth:`Engine.drop_item_knowledge`), the fusion weights to :meth:`Engine.load_fusion`,
and, given a :class:`~consumers.layer_swap.LayerSwap`, the adaptation layer's versions
(``adapter.matrix``) to it once caught up (one follower of the models topic per worker).
The worker polls between micro-batches, on its own thread (the engine is not
thread-safe), and does not report ready before both have caught up. A malformed record
is refused with its reason, counted and logged; the worker keeps what it had.

Also here: :func:`signal_records`, the records a worker publishes to
``interest.item-signals`` for one micro-batch's signals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from consumers.layer_swap import LayerSwap
from consumers.metrics import WorkerMetrics
from consumers.params_follower import ParamsFollower
from consumers.state_store import item_partition
from consumers.topic_follower import TopicFollower
from consumers.trainer import ADAPTER_PARAM
from interest_core.item_knowledge import ItemRecord, parse_item_knowledge
from interest_core.item_signals import (
    FUSION_KEY,
    FusionFeedback,
    ItemSignal,
    encode_fusion_record,
)
from interest_core.records import Rejected
from interest_core.settings import Settings
from interest_core.shared_fusion import FUSION_PARAM, fusion_spec
from interest_core.signal_columns import encode_columns
from producers.kafka_client import make_consumer, make_producer

__all__ = [
    "BUNDLE_BYTES",
    "LESSONS_PER_RECORD",
    "SharedKnowledge",
    "signal_records",
]

log = logging.getLogger(__name__)

#: Fusion lessons per record at most (a lesson is some 150 bytes of JSON).
LESSONS_PER_RECORD = 128

#: Bytes of one bundle at most (it may pass by one event's signals, some hundreds of
#: bytes): far below the producer's request size (``limits.max_publish_bytes``, 1 MB by
#: default) and the aggregation's parse limit, and small enough that one record's
#: delivery does not hold a batch's publishing long.
BUNDLE_BYTES = 256 * 1024


def signal_records(
    signals: Sequence[ItemSignal],
    lessons: Sequence[FusionFeedback],
    ingested_at: Mapping[tuple[int, int], float],
    *,
    partitions: int,
    max_bytes: int = BUNDLE_BYTES,
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` records for ``interest.item-signals``: per signals partition (of
    ``partitions``) the bundles of the items whose key maps to it (see
    :mod:`interest_core.item_signals`; at most about ``max_bytes`` each), then the fusion
    lessons. ``signals`` are own-item signals, one per positive event, as the engine's
    outbox keeps them (their partners' are written here too, see
    :mod:`interest_core.signal_columns`); ``ingested_at`` maps an event's
    ``(partition, offset)`` to when it entered Kafka (unix seconds)."""
    out = [
        (key.encode("utf-8"), value)
        for key, value in encode_columns(
            signals, ingested_at, lambda item: item_partition(item, partitions), max_bytes
        )
    ]
    stamped_lessons = [
        replace(lesson, ingested_at=ingested_at.get((lesson.partition, lesson.offset), 0.0))
        for lesson in lessons
    ]
    for start in range(0, len(stamped_lessons), LESSONS_PER_RECORD):
        chunk = stamped_lessons[start : start + LESSONS_PER_RECORD]
        out.append((FUSION_KEY.encode("utf-8"), encode_fusion_record(chunk)))
    return out


class SharedKnowledge:
    """Follows the items and models topics into one engine; call :meth:`poll` from the
    engine's thread. ``features`` are the engine's fusion features (for the shape check
    of the fusion weights)."""

    def __init__(
        self,
        settings: Settings,
        engine: Any,
        metrics: WorkerMetrics,
        *,
        features: Sequence[str],
        layer: LayerSwap | None = None,
        consumer_factory: Callable[..., Any] = make_consumer,
        producer_factory: Callable[..., Any] = make_producer,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.items = TopicFollower(
            settings,
            settings.topics.items,
            role="items",
            consumer_factory=consumer_factory,
            producer_factory=producer_factory,
        )
        # One follower of the models topic per worker: the adaptation layer's versions
        # (``adapter.matrix``) ride on it beside the fusion weights.
        self.layer = layer
        specs = [fusion_spec(features)] + ([] if layer is None else [layer.spec()])
        self.models = ParamsFollower(
            settings,
            specs,
            hooks=metrics,
            consumer_factory=consumer_factory,
            producer_factory=producer_factory,
        )
        self.records_applied = 0

    def start(self, timeout_s: float = 30.0) -> SharedKnowledge:
        """Start both followers from the beginning of their topics."""
        self.items.start(timeout_s)
        self.models.start(timeout_s)
        return self

    @property
    def caught_up(self) -> bool:
        """True once both topics have been read past what was there at start."""
        return self.items.caught_up and self.models.caught_up

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply what arrived on both topics; returns the item records applied."""
        now = time.time()
        records: list[ItemRecord] = []
        deleted: list[str] = []
        for record in self.items.poll(timeout_s):
            if record.value is None:
                if record.key is not None:
                    deleted.append(bytes(record.key).decode("utf-8", "replace"))
                continue
            parsed = parse_item_knowledge(record.key, record.value)
            if isinstance(parsed, Rejected):
                self.metrics.item_record(parsed.reason)
                log.warning(
                    "items record at %s refused: %s (%s)",
                    record.source,
                    parsed.reason,
                    parsed.detail,
                )
                continue
            records.append(parsed)
        applied = 0
        if records:
            refused_before = dict(self.engine.item_view.refused)
            applied = self.engine.apply_item_knowledge(records)
            for reason, n in self.engine.item_view.refused.items():
                self.metrics.item_record(reason, n - refused_before.get(reason, 0))
            self.metrics.item_record("applied", applied)
            self.metrics.item_knowledge_applied((r.ingested_at for r in records), now)
        if deleted:
            self.engine.drop_item_knowledge(deleted)
            self.metrics.item_record("tombstone", len(deleted))
        params = self.models.poll(0.0)
        for param in params:
            if param.name == FUSION_PARAM and not self.engine.load_fusion(param):
                log.warning("fusion weights version %d do not fit this engine", param.version)
        if self.layer is not None and self.models.caught_up:  # loading: LayerSwap.load
            self.layer.apply(params, self.models.get(ADAPTER_PARAM))
            self.layer.finish()
        view = self.engine.item_view
        self.metrics.item_knowledge_held(
            items=len(view), newest_ingested_at=view.newest_ingested_at, now=now
        )
        self.records_applied += applied
        return applied

    def close(self) -> None:
        """Close both followers (idempotent)."""
        for follower in (self.items, self.models):
            try:
                follower.close()
            except Exception:
                log.exception("closing the %s follower failed", type(follower).__name__)
