"""Follows the catalog topic: every partition, from the beginning, for as long as it runs.

Each worker holds the whole catalog, so the follower uses no consumer group: it assigns
itself every partition of the catalog topic, seeks to the beginning and remembers the
end offsets it saw then. ``caught_up`` turns true once it has read up to them; the
worker neither processes events nor reports ready before that. It keeps polling
afterwards so upserts and deletions take effect live. The follower only reads: the
worker applies what it returns between batches, on its own thread (the Engine is not
thread-safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from consumers.batching import InputRecord
from consumers.state_store import read_to_end
from interest_core.settings import Settings
from producers.kafka_client import make_consumer

__all__ = ["CatalogFollower"]

log = logging.getLogger(__name__)


class CatalogFollower:
    """Group-less reader of every catalog partition; call ``poll`` from one thread."""

    def __init__(
        self, settings: Settings, *, consumer_factory: Callable[..., Any] = make_consumer
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.catalog
        self._consumer_factory = consumer_factory
        self._consumer: Any = None
        self._targets: dict[TopicPartition, int] = {}
        self._caught_up = False
        self.records_read = 0

    def start(self, timeout_s: float = 30.0) -> CatalogFollower:
        """Assign every catalog partition from the beginning; note their end offsets.

        Waits up to ``timeout_s`` seconds for the topic to exist; raises ``RuntimeError``
        if it does not.
        """
        consumer = self._consumer_factory(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.kafka.client_id}-catalog",
        )
        self._consumer = consumer
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"catalog topic {self.topic} does not exist")
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        self._targets = {tp: int(end) for tp, end in consumer.end_offsets(tps).items()}
        self._update_caught_up()
        log.info("following catalog %s, catching up to %s", self.topic, self._targets)
        return self

    @property
    def caught_up(self) -> bool:
        """True once every partition has been read to the end offset seen at start."""
        return self._caught_up

    def _update_caught_up(self) -> None:
        if self._caught_up or self._consumer is None:
            return
        for tp, end in self._targets.items():
            if end > 0 and not read_to_end(self._consumer, tp, end):
                return
        self._caught_up = True
        log.info("catalog caught up after %d records", self.records_read)

    def poll(self, timeout_s: float = 0.0, max_records: int = 5000) -> list[InputRecord]:
        """Catalog records that arrived since the last call (waits up to ``timeout_s``)."""
        if self._consumer is None:
            raise RuntimeError("CatalogFollower.poll before start()")
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        now = time.time()
        out = [
            InputRecord.from_consumer_record(record, now)
            for records in polled.values()
            for record in records
        ]
        # Records of one partition stay in order; across partitions order does not matter
        # (one key lives in one partition).
        self.records_read += len(out)
        self._update_caught_up()
        return out

    def close(self) -> None:
        """Close the consumer (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)
