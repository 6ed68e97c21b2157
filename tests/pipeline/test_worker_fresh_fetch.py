"""An adaptive batch takes, once, what a fetch sent after the previous batch brings.

kafka-python hands out the records of the fetch that was answered before the previous
batch was processed; the records that arrived while it was processed come only with
the next fetch. Without a second look they would wait a whole further batch."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.batching import InputRecord, MicroBatcher
from consumers.testing import MemorySink
from consumers.worker import IDLE_POLL_MS, Worker
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int = 1_700_000_000_000
    headers: tuple[()] = ()


class ScriptedConsumer:
    """Answers each poll with the next scripted batch of records (then nothing)."""

    def __init__(self, *answers: list[Record]) -> None:
        self.answers = list(answers)
        self.done: threading.Event | None = None
        self.polls: list[tuple[int, int]] = []  # (timeout_ms, max_records)
        # The group gave it the partitions of its records (a member that owns nothing
        # polls long: consumers.group_membership.group_poll_ms).
        self.owned = {TopicPartition(r.topic, r.partition) for answer in answers for r in answer}

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.polls.append((timeout_ms, max_records or 0))
        if not self.answers and self.done is not None:
            self.done.set()  # the script is played: the loop ends after this round
        polled: dict[Any, list[Any]] = {}
        for record in self.answers.pop(0) if self.answers else []:
            polled.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return polled

    def commit_async(self, offsets: Any, callback: Any = None) -> None:
        if callback is not None:
            callback(offsets, None)


def _worker(**batch: Any) -> Worker:
    settings = Settings().replace(encoder={"backend": "hashing"}, batch=batch)
    worker = Worker(settings, HashingEncoder(), worker_id="t", registry=CollectorRegistry())
    worker._sink = MemorySink()
    return worker


def _records(settings: Settings, first: int, count: int) -> list[Record]:
    return [
        Record(
            settings.topics.events,
            0,
            offset,
            b"u1",
            orjson.dumps(
                {
                    "event_id": f"e{offset}",
                    "user_id": "u1",
                    "type": "search",
                    "query": "space",
                    "ts": 1_700_000_000.0 + offset,
                }
            ),
        )
        for offset in range(first, first + count)
    ]


class Follower:
    def poll(self, timeout_ms: int = 0) -> list[Any]:
        return []


def _run_loop(worker: Worker, consumer: ScriptedConsumer) -> None:
    """The worker's poll loop on ``consumer`` until its script is played."""
    stop = threading.Event()
    consumer.done = stop
    clients = SimpleNamespace(follower=Follower(), models=None, knowledge=None)
    worker._consumer = consumer
    worker._next_lag = worker._next_probe = float("inf")  # no lag probe on the fake
    worker._loop(clients, stop)  # type: ignore[arg-type]


def test_a_drained_batch_takes_the_records_of_a_fresh_fetch_once() -> None:
    worker = _worker(fresh_wait_ms=7)
    settings = worker.settings
    stale, fresh, later = (
        _records(settings, 0, 2),
        _records(settings, 2, 3),
        _records(settings, 5, 1),
    )
    consumer = ScriptedConsumer(stale, fresh, later)
    published: list[int] = []
    worker.step.on_published = lambda batch: published.append(batch.records)
    _run_loop(worker, consumer)
    worker._complete_in_flight()
    # The stale buffer and what the second look brought make one batch; the second
    # look waited up to fresh_wait_ms; the next batch looked again.
    assert published == [5, 1]
    assert [timeout for timeout, _ in consumer.polls[:2]] == [IDLE_POLL_MS, 7]
    assert consumer.polls[3][0] == 7


@pytest.mark.parametrize(
    "batch", [{"fresh_wait_ms": 0}, {"adaptive": False, "max_wait_ms": 0}, {"max_events": 2}]
)
def test_no_second_look_when_switched_off_full_or_not_adaptive(batch: dict[str, Any]) -> None:
    worker = _worker(**batch)
    settings = worker.settings
    consumer = ScriptedConsumer(_records(settings, 0, 2), _records(settings, 2, 1))
    published: list[int] = []
    worker.step.on_published = lambda b: published.append(b.records)
    _run_loop(worker, consumer)
    worker._complete_in_flight()
    assert published == [2, 1]


def test_the_batcher_offers_one_second_look_per_drained_batch() -> None:
    batcher = MicroBatcher(10, 1.0, adaptive=True, fresh_wait_ms=5)
    assert batcher.second_look() is None  # empty
    batcher.add(InputRecord("events", 0, 0, None, b"{}"))
    assert batcher.second_look() is None  # not drained yet
    batcher.drained()
    assert batcher.second_look() == 5
    assert batcher.second_look() is None
    batcher.flush()
    batcher.add(InputRecord("events", 0, 1, None, b"{}"))
    batcher.drained()
    assert batcher.second_look() == 5
