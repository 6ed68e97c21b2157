"""Follows the catalog topic: every partition, from the beginning, for as long as it runs.

Each worker holds the whole catalog, so the follower uses no consumer group: it assigns
itself every partition of the catalog topic and seeks to the beginning. To know where
"caught up" is, it writes one barrier marker (a tombstone under
``consumers.barrier.BARRIER_KEY``) to every catalog partition at start and waits for
its acknowledgement: ``caught_up`` turns true once it has read past every marker, so
every catalog record acknowledged before the worker started is applied, on any Kafka
(the embedded broker's end offsets stop short of a partition's last batch). Markers are
never handed to the worker (neither items nor rejected records). If no marker can be
written (no write permission on the catalog topic), it falls back to the end offsets
seen at start, backed by the fetch high watermark. The worker neither processes events
nor reports ready before ``caught_up``. It keeps polling
afterwards so upserts and deletions take effect live. The follower only reads: the
worker applies what it returns between batches, on its own thread (the Engine is not
thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.topic_follower import TopicFollower
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer

__all__ = ["CatalogFollower"]


class CatalogFollower(TopicFollower):
    """Group-less reader of every catalog partition; call ``poll`` from one thread.

    A :class:`~consumers.topic_follower.TopicFollower` on ``topics.catalog``. ``barrier``
    False skips the start-up markers (no writes to the catalog topic) and relies on the
    end offsets instead.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        consumer_factory: Callable[..., Any] = make_consumer,
        producer_factory: Callable[..., Any] = make_producer,
        barrier: bool = True,
    ) -> None:
        super().__init__(
            settings,
            settings.topics.catalog,
            role="catalog",
            consumer_factory=consumer_factory,
            producer_factory=producer_factory,
            barrier=barrier,
        )
