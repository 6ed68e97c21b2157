"""Fakes for running the worker's step with no broker (like Bytewax's ``testing.py``).

- :class:`MemorySink` keeps what is flushed, in order: the pipeline harness's Kafka.
- :class:`MemoryStateSource` reads the state records a :class:`MemorySink` holds, as
  the state topic would after compaction.
- :class:`RecordFeed` turns contract JSON into events-topic records keyed by user,
  with per-partition offsets, as a consumer would hand them over.

Used by the tests and by ``interest bench``; never by a running worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import orjson
from kafka.errors import MessageSizeTooLargeError

from consumers.batching import InputRecord
from consumers.bounded import record_bytes
from consumers.sinks import OutgoingRecord
from consumers.state_store import StateEntry, partition_for_key

__all__ = ["MemorySink", "MemoryStateSource", "RecordFeed", "catalog_records"]


class MemorySink:
    """A sink that keeps what is flushed, in order.

    ``max_record_bytes`` (key + value + headers) makes it refuse bigger records in
    ``send`` as a producer does (``MessageSizeTooLargeError``); None accepts any size.
    """

    reaches_broker = False  # nothing of a broker's answer in a flush here
    acked_at = 0.0

    def __init__(self, max_record_bytes: int | None = None) -> None:
        self.records: list[OutgoingRecord] = []
        self._pending: list[OutgoingRecord] = []
        self.flushes = 0
        self.max_record_bytes = max_record_bytes

    def send(self, record: OutgoingRecord) -> None:
        if self.max_record_bytes is not None and record_bytes(record) > self.max_record_bytes:
            raise MessageSizeTooLargeError(
                f"{record_bytes(record)} bytes > {self.max_record_bytes} (memory sink limit)"
            )
        self._pending.append(record)

    def flush(self) -> None:
        self.records.extend(self._pending)
        self._pending.clear()
        self.flushes += 1

    def on(self, topic: str) -> list[OutgoingRecord]:
        """Flushed records of ``topic``, in order."""
        return [r for r in self.records if r.topic == topic]

    def latest(self, topic: str) -> dict[str, bytes | None]:
        """Latest value per key on ``topic`` (what compaction would keep)."""
        out: dict[str, bytes | None] = {}
        for record in self.on(topic):
            if record.key is not None:
                out[record.key.decode()] = record.value
        return out


class MemoryStateSource:
    """A state source reading ``sink``'s records on ``topic`` (``partitions`` events
    partitions, users placed as the producer's key hash places them). ``reads`` counts
    the reads."""

    def __init__(self, sink: MemorySink, topic: str, partitions: int) -> None:
        self.sink = sink
        self.topic = topic
        self.partitions = partitions
        self.reads = 0

    def read(
        self,
        partitions: Collection[int] | None = None,
        *,
        users: Collection[str] | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, StateEntry]:
        """The latest entry per user, of ``partitions`` and ``users`` (None: all)."""
        self.reads += 1
        out = {}
        for user, blob in self.sink.latest(self.topic).items():
            partition = partition_for_key(user.encode(), self.partitions)
            if partitions is not None and partition not in partitions:
                continue
            if users is not None and user not in users:
                continue
            out[user] = StateEntry(user, partition, blob)
        return out


class RecordFeed:
    """Events-topic records for ``topic`` of ``partitions`` partitions: keyed by user,
    partitioned like the producer does, with consecutive offsets per partition."""

    def __init__(self, topic: str, partitions: int, *, ingested_at: float = 1_700_000_000.0):
        self.topic = topic
        self.partitions = partitions
        self.ingested_at = ingested_at
        self.offsets: Counter[int] = Counter()

    def record(self, key: str, value: bytes | None) -> InputRecord:
        """One record with ``key`` (a user id) and raw ``value`` (None: a null value)."""
        partition = partition_for_key(key.encode(), self.partitions)
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        return InputRecord(self.topic, partition, offset, key.encode(), value, self.ingested_at)

    def events(self, events: Iterable[Mapping[str, Any]]) -> list[InputRecord]:
        """Records of contract events (dicts with a ``user_id``), in order."""
        return [self.record(str(e["user_id"]), orjson.dumps(e)) for e in events]


def catalog_records(topic: str, catalog: Iterable[Mapping[str, Any]]) -> list[InputRecord]:
    """Catalog-topic records (partition 0) of catalog dicts, keyed by ``item_id``."""
    return [
        InputRecord(topic, 0, i, str(c["item_id"]).encode(), orjson.dumps(c))
        for i, c in enumerate(catalog)
    ]
