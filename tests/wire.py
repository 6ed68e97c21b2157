"""What the broker serves, batch by batch: for tests of how records are stored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import kafka.consumer.fetcher as fetcher
from kafka.record import MemoryRecords

#: Kafka's codec ids in a record batch's attributes.
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@contextmanager
def batch_codecs() -> Iterator[Counter[str]]:
    """Count the codec of every record batch this process's consumers fetch meanwhile
    (kafka-python's fetcher builds a ``MemoryRecords`` of each partition's fetched
    bytes: a copy is read batch by batch before the fetcher reads the bytes itself)."""
    seen: Counter[str] = Counter()

    def counting(data: Any) -> MemoryRecords:
        probe = MemoryRecords(data)
        while (batch := probe.next_batch()) is not None:
            seen[CODECS.get(batch.compression_type, str(batch.compression_type))] += 1
        return MemoryRecords(data)

    with mock.patch.object(fetcher, "MemoryRecords", counting):
        yield seen
