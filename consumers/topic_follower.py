"""Follows one shared topic: every partition, from the beginning, for as long as it runs.

For the topics every worker reads whole (``interest.catalog`` through
:mod:`consumers.catalog_follower`, ``interest.models``, ``interest.items``): no consumer
group, every partition assigned and read from the start, then live. "Caught up" means read past one barrier
marker written to every partition at start (see :mod:`consumers.barrier`), or, when the
topic cannot be written, past the end offsets seen at start. Markers are never handed
back. The follower only reads and returns raw records; what they mean is the caller's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Self

from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.barrier import is_barrier, passed_barrier, place_barriers
from consumers.batching import InputRecord
from consumers.state_store import read_to_end
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer

__all__ = ["TopicFollower"]

log = logging.getLogger(__name__)


class TopicFollower:
    """Group-less reader of every partition of ``topic``; call ``poll`` from one thread.

    ``role`` names it in client ids and logs (``models``, ``items``). ``barrier`` False
    skips the start-up markers and relies on the end offsets instead.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        role: str,
        consumer_factory: Callable[..., Any] = make_consumer,
        producer_factory: Callable[..., Any] = make_producer,
        barrier: bool = True,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.role = role
        self.barrier = barrier
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Any = None
        self._targets: dict[TopicPartition, int] = {}
        self._by_barrier = False
        self._caught_up = False
        self.records_read = 0

    def start(self, timeout_s: float = 30.0) -> Self:
        """Assign every partition from the beginning; place the barrier markers.

        Waits up to ``timeout_s`` seconds for the topic to exist (and as long again for
        the markers' acknowledgements); raises ``RuntimeError`` if it does not exist.
        """
        consumer = self._consumer_factory(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.kafka.client_id}-{self.role}",
            background=True,  # read between batches; freshness in seconds
        )
        self._consumer = consumer
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            if time.monotonic() > deadline:
                consumer.close(autocommit=False)
                self._consumer = None
                raise RuntimeError(
                    f"{self.role} topic {self.topic} does not exist (run `interest topics create`)"
                )
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        markers = self._place_markers(tps, timeout_s)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        if markers is not None:
            self._targets, self._by_barrier = markers, True
        else:
            self._targets = {tp: int(end) for tp, end in consumer.end_offsets(tps).items()}
        self._update_caught_up()
        log.info(
            "following %s topic %s, catching up to %s %s",
            self.role,
            self.topic,
            "the barriers at" if self._by_barrier else "the end offsets",
            {tp.partition: offset for tp, offset in self._targets.items()},
        )
        return self

    def _place_markers(
        self, tps: list[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int] | None:
        if not self.barrier:
            return None
        producer: Any = None
        try:
            producer = self._producer_factory(
                self.settings, client_id=f"{self.settings.kafka.client_id}-{self.role}-barrier"
            )
            offsets = place_barriers(producer, self.topic, [tp.partition for tp in tps], timeout_s)
        except KafkaError as exc:
            log.warning(
                "no barrier on %s (%s): catching up to the end offsets instead", self.topic, exc
            )
            return None
        finally:
            if producer is not None:
                producer.close(timeout=5)
        return {tp: offsets[tp.partition] for tp in tps}

    @property
    def caught_up(self) -> bool:
        """True once every partition has been read past its marker (or end offset at start)."""
        return self._caught_up

    def _update_caught_up(self) -> None:
        if self._caught_up or self._consumer is None:
            return
        for tp, target in self._targets.items():
            if self._by_barrier:
                if not passed_barrier(self._consumer, tp, target):
                    return
            elif target > 0 and not read_to_end(self._consumer, tp, target):
                return
        self._caught_up = True
        log.info("%s topic caught up after %d records", self.role, self.records_read)

    def poll(self, timeout_s: float = 0.0, max_records: int = 5000) -> list[InputRecord]:
        """Records that arrived since the last call (waits up to ``timeout_s`` seconds);
        in order within a partition."""
        if self._consumer is None:
            raise RuntimeError(f"{self.role} follower: poll before start()")
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        now = time.time()
        out = [
            InputRecord.from_consumer_record(record, now)
            for records in polled.values()
            for record in records
            if not is_barrier(record.key)
        ]
        self.records_read += len(out)
        self._update_caught_up()
        return out

    def close(self) -> None:
        """Close the consumer (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)
