"""The worker's pipelined publish: batch N+1 is processed while N's records are being
acknowledged, yet N's offsets are committed only after its records are acknowledged,
and the latency hook sees every published batch."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from consumers.batching import InputRecord
from consumers.latency import BatchLatency
from consumers.sinks import OutgoingRecord
from consumers.testing import MemorySink
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings


class Journal:
    """What happened, in order: sends, flushes (acknowledgements) and commits."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []


class RecordingSink(MemorySink):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def send(self, record: OutgoingRecord) -> None:
        super().send(record)
        self.journal.steps.append(("send", record.key))

    def flush(self) -> None:
        super().flush()
        self.journal.steps.append(("flush", None))


class RecordingConsumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.journal.steps.append(
            ("commit", {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()})
        )

    def commit_async(self, offsets: dict[Any, Any], callback: Any = None) -> None:
        self.commit(offsets)
        if callback is not None:
            callback(offsets, None)


def _worker(
    journal: Journal, published: list[BatchLatency], *, shared_items: bool = False
) -> Worker:
    # Item signals (items.shared) add their own send + flush; the last test checks them.
    settings = Settings().replace(encoder={"backend": "hashing"}, items={"shared": shared_items})
    worker = Worker(
        settings,
        HashingEncoder(),
        worker_id="test",
        registry=CollectorRegistry(),
        on_published=published.append,
    )
    items = [{"item_id": f"i{n}", "title": f"film {n}", "genres": ["drama"]} for n in range(5)]
    worker.apply_catalog_records(
        [
            InputRecord(settings.topics.catalog, 0, n, c["item_id"].encode(), orjson.dumps(c))
            for n, c in enumerate(items)
        ]
    )
    worker._sink = RecordingSink(journal)
    worker._consumer = RecordingConsumer(journal)
    return worker


def _event(settings: Settings, user: str, offset: int) -> InputRecord:
    value = {"event_id": f"e{offset}", "user_id": user, "type": "click", "item_id": "i1"}
    value["ts"] = 1_700_000_000.0 + offset
    return InputRecord(settings.topics.events, 0, offset, user.encode(), orjson.dumps(value), 1.0)


def test_commit_follows_the_acknowledgement_of_its_own_batch() -> None:
    journal = Journal()
    published: list[BatchLatency] = []
    worker = _worker(journal, published)
    settings = worker.settings
    events = settings.topics.events

    worker.batcher.add(_event(settings, "u1", 0))
    worker._flush_and_commit()  # batch 1 processed and sent, not yet awaited
    assert [s for s, _ in journal.steps] == ["send", "send"]  # state, recommendation
    assert not published

    worker.batcher.add(_event(settings, "u2", 1))
    worker._flush_and_commit()  # batch 2 processed; batch 1 acknowledged, then committed
    kinds = [s for s, _ in journal.steps]
    assert kinds == ["send", "send", "flush", "commit", "send", "send"]
    assert journal.steps[3] == ("commit", {(events, 0): 1})
    assert len(published) == 1 and published[0].events == 1

    worker._complete_in_flight()  # nothing more polled: batch 2 finished at once
    assert journal.steps[-2:] == [("flush", None), ("commit", {(events, 0): 2})]
    assert len(published) == 2
    latency = published[1]
    assert latency.started <= latency.processed <= latency.acked
    worker._complete_in_flight()  # idempotent: nothing in flight
    assert len(journal.steps) == 8


class JournalledLatencies(list[BatchLatency]):
    """The latency hook's list, also journalled (publication as a step among the others)."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def append(self, latency: BatchLatency) -> None:
        super().append(latency)
        self.journal.steps.append(("published", latency.records))


def test_states_wait_for_the_signals_and_recommendations_for_nothing() -> None:
    """Once a user's new state is published its events are skipped on re-processing, so
    the item signals they gave rise to are acknowledged before the state is even sent.
    The recommendation goes out with the signals (users wait for it, and it must precede
    the state): the batch is published when they are acknowledged, and committed once its
    state is too. The worker never waits for an acknowledgement while it has a batch to
    send: a batch's held-back states fly with the next batch's first records."""
    journal = Journal()
    published = JournalledLatencies(journal)
    worker = _worker(journal, published, shared_items=True)
    settings = worker.settings
    events = settings.topics.events
    sink, consumer = worker._sink, worker._consumer

    worker.batcher.add(_event(settings, "u1", 0))
    worker._flush_and_commit()  # signals of i1 and u1's recommendation, not awaited
    assert journal.steps == [("send", b"i1"), ("send", b"u1")]
    worker.pipeline.advance(sink, consumer)  # idle, acknowledged: published; u1's state sent
    assert journal.steps[2:] == [("flush", None), ("published", 1), ("send", b"u1")]
    worker.pipeline.advance(sink, consumer)  # the state acknowledged: committed
    assert journal.steps[5:] == [("flush", None), ("commit", {(events, 0): 1})]
    assert [r.topic for r in sink.records] == [
        settings.topics.item_signals,
        settings.topics.recommendations,
        settings.topics.state,
    ]
    events_named = orjson.loads(sink.records[0].value)["events"]
    assert (events_named["p"], events_named["o"]) == ([0], [0])

    # Busy: batch 3 is processed while batch 2's first records are in the air; then
    # batch 2 is published and its state flies with batch 3's first records.
    del journal.steps[:]
    worker.batcher.add(_event(settings, "u2", 1))
    worker._flush_and_commit()
    worker.batcher.add(_event(settings, "u3", 2))
    worker._flush_and_commit()
    assert journal.steps == [
        ("send", b"i1"),  # batch 2: signals, recommendation
        ("send", b"u2"),
        ("flush", None),  # landed: batch 2 published
        ("published", 1),
        ("send", b"u2"),  # batch 2's state, batch 3's signals and recommendation
        ("send", b"i1"),
        ("send", b"u3"),
    ]
    worker._complete_in_flight()  # stop: everything landed and committed in order
    assert journal.steps[7:] == [
        ("flush", None),
        ("published", 1),  # batch 3
        ("commit", {(events, 0): 2}),  # batch 2: its state is acknowledged
        ("send", b"u3"),  # batch 3's state
        ("flush", None),
        ("commit", {(events, 0): 3}),
    ]
    assert not worker.pipeline.in_flight
    assert all(lat.processed <= lat.acked for lat in published)
