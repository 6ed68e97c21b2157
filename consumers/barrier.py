"""Read-your-writes barriers: how a reader knows it has seen everything acknowledged.

Reading a partition "to its end offset" is not enough on every broker: the embedded
broker (Tansu) answers ListOffsets, and serves fetches, only up to the first record of
the last batch written to a partition, until another batch lands there (see
docs/GUARANTEES.md). A reader that stops at the end offset then misses acknowledged
records, e.g. a user's newest state.

The barrier is correct on any Kafka: before reading a partition, produce one marker
record to it (a tombstone under :data:`BARRIER_KEY`) and wait for its acknowledgement;
the acknowledged offset is then a lower bound on the true end. Read until the
consumer's position has passed the marker's offset: everything acknowledged before the
marker has then been delivered. On Apache Kafka this costs one tiny tombstone per
partition per read, and compaction removes it.

The key can never be a real user or item id: ids are printable strings
(``interest_core.records._clean_id``), and the key starts with a NUL byte. Every reader
of a topic that may hold markers (state, catalog) skips records with this key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka import TopicPartition

__all__ = ["BARRIER_KEY", "is_barrier", "passed_barrier", "place_barriers"]

log = logging.getLogger(__name__)

#: Key of barrier markers: not printable, so never a user or item id.
BARRIER_KEY = b"\x00interest-barrier"


def is_barrier(key: bytes | bytearray | memoryview | None) -> bool:
    """True when ``key`` is a barrier marker's key (the record carries no data)."""
    return key is not None and bytes(key) == BARRIER_KEY


def place_barriers(
    producer: Any, topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, int]:
    """Write one marker tombstone to each of ``partitions`` of ``topic``; wait for them.

    Returns the acknowledged offset of each partition's marker. Raises kafka-python's
    ``KafkaError`` (e.g. ``KafkaTimeoutError``) when a marker is not acknowledged within
    ``timeout_s`` seconds in all.
    """
    futures = {
        partition: producer.send(topic, key=BARRIER_KEY, value=None, partition=partition)
        for partition in sorted(set(partitions))
    }
    producer.flush(timeout=timeout_s)
    offsets = {p: int(f.get(timeout=timeout_s).offset) for p, f in futures.items()}
    log.debug("barriers on %s at %s", topic, offsets)
    return offsets


def passed_barrier(consumer: Any, tp: TopicPartition, marker_offset: int) -> bool:
    """True once ``consumer`` has delivered ``tp`` up to and including ``marker_offset``.

    Position-based, so a marker removed by compaction in the meantime still counts as
    passed once the reader has moved beyond its offset.
    """
    return int(consumer.position(tp)) > marker_offset
