"""Reading users' state back from the compacted state topic.

The worker writes each changed user's serialised state to the state topic (key
``user_id``) before it commits the offsets of the events that changed it, so the topic
always holds at least what the committed offsets claim. A worker that takes over an
events partition reads the matching state partition from the beginning to its end; the
latest value per key wins and a null value (tombstone) means deleted.

"Its end" is fixed by a read-your-writes barrier (:mod:`consumers.barrier`): a marker
tombstone is produced to each partition read and the read goes on until the consumer has
passed it, so every state acknowledged before the read started is seen, on any Kafka
(the embedded broker's end offsets fall short of a partition's last batch). Markers are
skipped. When no marker can be written (e.g. no write permission for ``interest
inspect``), the reader falls back to the end offsets backed by the fetch high watermark.

The state topic normally has as many partitions as the events topic, and both are
keyed by ``user_id`` with Kafka's default partitioner, so a user's state sits in the
same partition number as its events. When the counts differ, every state partition is
read and a user is kept when its key hashes (murmur2, as kafka-python's
``DefaultPartitioner``) to one of the requested events partitions.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from consumers.barrier import is_barrier, passed_barrier, place_barriers
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer

__all__ = [
    "StateEntry",
    "StateReader",
    "StateRestoreError",
    "item_partition",
    "partition_for_key",
    "read_to_end",
    "signal_partitions",
]

log = logging.getLogger(__name__)


class StateRestoreError(RuntimeError):
    """The state topic could not be read to its end within the restore timeout."""


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition kafka-python's default partitioner picks for ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@functools.lru_cache(maxsize=1 << 20)
def item_partition(item_id: str, partitions: int) -> int:
    """:func:`partition_for_key` of an item id (cached: workers and aggregators ask it
    for every item of every batch, and murmur2 runs in Python)."""
    return partition_for_key(item_id.encode("utf-8"), partitions)


def signal_partitions(consumer: Any, settings: Settings) -> int:
    """Partitions of the signals topic as the broker counts them, else the settings'
    (the topic not created yet). Workers and aggregators both ask it: a worker puts a
    bundle of item signals on the partition of its items' keys, an aggregator owns the
    items of its partitions, so they must count alike."""
    topic, configured = settings.topics.item_signals, settings.topics.item_signals_partitions
    found = consumer.partitions_for_topic(topic)
    if found and len(found) != configured:
        log.warning(
            "%s has %d partitions, topics.item_signals_partitions says %d: using %d",
            topic,
            len(found),
            configured,
            len(found),
        )
        return len(found)
    return configured


def read_to_end(consumer: Any, tp: TopicPartition, end_offset: int) -> bool:
    """True once ``consumer`` has read ``tp`` up to ``end_offset`` and its high watermark.

    The high watermark of the latest fetch backs up ``end_offsets``: the embedded broker
    answers ListOffsets with the last batch's base offset + 1, short of the true end
    when that batch holds several records; fetch responses carry the true one.
    """
    position = consumer.position(tp)
    if position < end_offset:
        return False
    highwater = consumer.highwater(tp)
    return highwater is not None and position >= highwater


@dataclass(frozen=True, slots=True)
class StateEntry:
    """The latest state-topic value of one user.

    ``partition`` is the user's events partition; ``blob`` is None for a deleted user;
    ``offset`` is the state record's offset (for ``interest inspect``).
    """

    user_id: str
    partition: int
    blob: bytes | None
    offset: int = -1
    timestamp_ms: int = -1


@dataclass(frozen=True)
class _ReadPlan:
    """State partitions to read, and which users / events partitions to keep."""

    to_read: list[int]
    aligned: bool  # state and events topics have as many partitions
    events_count: int
    partitions: set[int] | None
    users: set[str] | None


class StateReader:
    """Group-less reader of the state topic; owns one consumer (and, with ``barrier``, one
    producer for the markers), created on first use.

    ``barrier`` False reads to the end offsets instead (no writes; misses the tail of the
    last batch on the embedded broker unless the fetch high watermark covers it). With
    ``strict`` (the worker's restores), a marker that cannot be written fails the read
    with :class:`StateRestoreError` instead of falling back to the end offsets.
    Not thread-safe: one caller at a time.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        consumer_factory: Callable[..., Any] = make_consumer,
        producer_factory: Callable[..., Any] = make_producer,
        timeout_s: float | None = None,
        barrier: bool = True,
        strict: bool = False,
    ) -> None:
        self.settings = settings
        self.timeout_s = settings.state.restore_timeout_s if timeout_s is None else timeout_s
        self.barrier = barrier
        self.strict = strict
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._consumer: Any = None
        self._producer: Any = None
        #: Bytes of state records read by the last :meth:`read` (markers excluded).
        self.last_read_bytes = 0
        #: State records read by the last :meth:`read` (every version, markers excluded).
        self.last_read_records = 0

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = self._consumer_factory(
                self.settings,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"{self.settings.kafka.client_id}-state",
            )
        return self._consumer

    def _markers(self, tps: list[TopicPartition]) -> dict[TopicPartition, int] | None:
        """Barrier offsets per partition, or None when the barrier is off or failed."""
        if not self.barrier:
            return None
        try:
            if self._producer is None:
                self._producer = self._producer_factory(
                    self.settings, client_id=f"{self.settings.kafka.client_id}-state-barrier"
                )
            topic = self.settings.topics.state
            offsets = place_barriers(
                self._producer, topic, [tp.partition for tp in tps], self.timeout_s
            )
        except KafkaError as exc:
            if self.strict:
                raise StateRestoreError(
                    f"no barrier could be written to {self.settings.topics.state}: {exc}"
                ) from exc
            log.warning(
                "no barrier on %s (%s): reading to the end offsets instead",
                self.settings.topics.state,
                exc,
            )
            return None
        return {tp: offsets[tp.partition] for tp in tps}

    def _partition_count(self, topic: str) -> int:
        found = self._client().partitions_for_topic(topic)
        return len(found) if found else 0

    def read(
        self,
        partitions: Collection[int] | None = None,
        *,
        users: Collection[str] | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, StateEntry]:
        """Latest state per user of the given events ``partitions`` (None: every user).

        ``users`` narrows the result to those user ids. Reads from the beginning past a
        barrier marker placed at the start of the call (every state acknowledged before
        the call is seen). ``keep_alive`` is called between polls (about every 0.2 s),
        e.g. to keep a group member polling. Raises :class:`StateRestoreError` when the
        read takes longer than the restore timeout (seconds).
        """
        plan = self._read_plan(partitions, users)
        if plan is None:
            return {}
        topics = self.settings.topics
        consumer = self._client()
        tps = [TopicPartition(topics.state, p) for p in plan.to_read]
        deadline = time.monotonic() + self.timeout_s
        markers = self._markers(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        if markers is None:
            end = consumer.end_offsets(tps, timeout_ms=int(self.timeout_s * 1000))
            pending = {tp for tp in tps if end.get(tp, 0) > 0}
        else:
            pending = set(tps)
        latest: dict[str, StateEntry] = {}
        self.last_read_bytes = self.last_read_records = 0
        while pending:
            if time.monotonic() > deadline:
                raise StateRestoreError(
                    f"state topic {topics.state} partitions {sorted(tp.partition for tp in pending)}"
                    f" not read to their end within {self.timeout_s:.0f} s"
                )
            polled = consumer.poll(timeout_ms=200, max_records=10_000)
            for tp, records in polled.items():
                for record in records:
                    entry = self._entry(plan, tp, record)
                    if entry is not None:
                        latest[entry.user_id] = entry
            for tp in list(pending):
                if (
                    passed_barrier(consumer, tp, markers[tp])
                    if markers is not None
                    else read_to_end(consumer, tp, end[tp])
                ):
                    pending.discard(tp)
            if keep_alive is not None:
                keep_alive()
        consumer.assign([])
        return latest

    def _read_plan(
        self, partitions: Collection[int] | None, users: Collection[str] | None
    ) -> _ReadPlan | None:
        """Which state partitions to read for these events ``partitions`` and ``users``
        (None: nothing to read)."""
        topics = self.settings.topics
        state_count = self._partition_count(topics.state)
        if state_count == 0:
            log.warning("state topic %s does not exist: nothing to restore", topics.state)
            return None
        events_count = self._partition_count(topics.events) or topics.events_partitions
        aligned = state_count == events_count
        if partitions is None:
            to_read = list(range(state_count))
        elif aligned:
            to_read = sorted(p for p in set(partitions) if 0 <= p < state_count)
        else:
            to_read = list(range(state_count))
        wanted = None if partitions is None else set(partitions)
        wanted_users = None if users is None else set(users)
        if not to_read or (wanted_users is not None and not wanted_users):
            return None
        return _ReadPlan(to_read, aligned, events_count, wanted, wanted_users)

    def _entry(self, plan: _ReadPlan, tp: TopicPartition, record: Any) -> StateEntry | None:
        """The state record as an entry of a wanted user, else None (counted either way,
        barrier markers aside)."""
        # Records past the barrier are kept: newer state is never wrong.
        if record.key is None or is_barrier(record.key):
            return None
        self.last_read_records += 1
        self.last_read_bytes += len(record.key) + len(record.value or b"")
        user_id = bytes(record.key).decode("utf-8", "replace")
        if plan.users is not None and user_id not in plan.users:
            return None
        events_partition = (
            tp.partition
            if plan.aligned
            else partition_for_key(bytes(record.key), plan.events_count)
        )
        wanted = plan.partitions
        if not plan.aligned and wanted is not None and events_partition not in wanted:
            return None
        return StateEntry(
            user_id,
            events_partition,
            None if record.value is None else bytes(record.value),
            record.offset,
            int(record.timestamp or -1),
        )

    def close(self) -> None:
        """Close the consumer and the marker producer (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
