"""Workers on the embedded broker: exactly-once state, failover, live catalog, metrics.

Workers run as threads of this process with the hashing encoder; events and the
catalog are produced directly with ``make_producer``. Every test has fresh topics and
a fresh group (the ``kafka_settings`` fixture).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.inspect import describe_entry
from consumers.state_store import StateReader, read_to_end
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.records import parse_recommendation
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer
from producers.topics import create_topics
from tests.data_paths import MOVIELENS_SMALL as MOVIELENS
from tests.data_paths import movielens_log
from tests.wire import batch_codecs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not MOVIELENS.exists(), reason="MovieLens data not present"),
]

BAD_RECORDS = [
    (b"u1", b"{broken json", "not_json"),
    (b"u2", orjson.dumps({"user_id": "u2", "ts": 1.0, "type": "teleport"}), "unknown_event_type"),
    (b"u3", orjson.dumps({"user_id": "u3", "type": "view", "item_id": "m1"}), "missing_field:ts"),
    (
        b"u4",
        orjson.dumps({"user_id": "u4", "ts": 9e8, "type": "click", "item_id": "nope"}),
        "unknown_item",
    ),
]


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    chosen = kafka_settings.replace(encoder={"backend": "hashing"}, state={"restore_timeout_s": 30})
    create_topics(chosen)
    return chosen


class Running:
    """A worker thread; ``stop()`` finishes its batch, commits and leaves the group."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        self.worker = Worker(
            settings, HashingEncoder(), worker_id=worker_id, registry=CollectorRegistry()
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=worker_id, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop_event)
        except BaseException as exc:
            self.error = exc
            raise

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "worker did not stop"
        assert self.error is None, self.error


@contextmanager
def workers(settings: Settings, *ids: str) -> Iterator[list[Running]]:
    running = [Running(settings, i) for i in ids]
    try:
        yield running
    finally:
        for r in running:
            if r.thread.is_alive():
                r.stop_event.set()
        for r in running:
            r.thread.join(timeout=30)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 45.0,
    why: Callable[[], object] | None = None,
) -> None:
    """Wait for ``condition``; on a timeout the error says ``why()`` (the state it saw)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    seen = "" if why is None else f" (at the deadline: {why()})"
    raise AssertionError(f"timed out waiting for {what} after {timeout_s:.0f} s{seen}")


def not_ready(*running: Running) -> dict[str, list[str]]:
    """Each worker's reasons for not being ready (``/readyz``'s), by worker id."""
    return {r.worker.worker_id: r.worker.not_ready_reasons() for r in running}


#: (topic, partition) -> next offset, from the producer's own acknowledgements. The
#: embedded broker's ListOffsets can fall short of the true end, so tests use these.
PRODUCED_ENDS: dict[tuple[str, int], int] = {}


def produce(settings: Settings, topic: str, pairs: list[tuple[bytes, bytes | None]]) -> None:
    producer = make_producer(settings)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in pairs]
        producer.flush()
        for future in futures:
            meta = future.get(timeout=10)
            where = (meta.topic, meta.partition)
            PRODUCED_ENDS[where] = max(PRODUCED_ENDS.get(where, 0), meta.offset + 1)
    finally:
        producer.close()


def produce_catalog(settings: Settings, catalog: list[dict]) -> None:
    produce(
        settings,
        settings.topics.catalog,
        [(c["item_id"].encode(), orjson.dumps(c)) for c in catalog],
    )


def produce_events(settings: Settings, events: list[dict]) -> None:
    produce(
        settings,
        settings.topics.events,
        [(e["user_id"].encode(), orjson.dumps(e)) for e in events],
    )


def all_committed(settings: Settings) -> Callable[[], bool]:
    """True once the group's committed offsets reach the end of every events partition."""
    checker = make_consumer(settings, group_id=settings.consumer.group_id, enable_auto_commit=False)
    tps = [
        TopicPartition(settings.topics.events, p) for p in range(settings.topics.events_partitions)
    ]

    def check() -> bool:
        ends = {tp: PRODUCED_ENDS.get((tp.topic, tp.partition), 0) for tp in tps}
        return all((checker.committed(tp) or 0) >= ends[tp] for tp in tps)

    check.close = checker.close  # type: ignore[attr-defined]
    return check


def read_topic(settings: Settings, topic: str) -> list:
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    out = []
    while not all(ends[tp] == 0 or read_to_end(consumer, tp, ends[tp]) for tp in tps):
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    consumer.close()
    return out


def state_counts(settings: Settings) -> dict[str, dict[str, int]]:
    """Events applied by type per user, as the state topic holds them (via inspect)."""
    reader = StateReader(settings)
    try:
        entries = reader.read()
    finally:
        reader.close()
    return {
        user: describe_entry(entry, settings)["events_by_type"]
        for user, entry in entries.items()
        if entry.blob is not None
    }


def expected_counts(events: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for e in events:
        out.setdefault(e["user_id"], Counter())[e["type"]] += 1
    return {u: dict(c) for u, c in out.items()}


@pytest.mark.parametrize("read_ahead", [True, False], ids=["reader-process", "group-consumer"])
def test_two_workers_apply_every_event_once_and_dead_letter_the_bad(
    settings: Settings, read_ahead: bool
) -> None:
    """Either source of events (a reader process ahead of the worker, or its group
    consumer polling between batches): every event applied once across the rebalance of
    the second worker joining, every bad record dead-lettered once."""
    settings = settings.replace(consumer={"read_ahead": read_ahead})
    catalog, events = movielens_log(users=40, per_user=7)
    produce_catalog(settings, catalog)
    with workers(settings, "w1", "w2") as (w1, w2):
        wait_for(
            lambda: w1.worker.ready and w2.worker.ready,
            "both workers ready",
            why=lambda: not_ready(w1, w2),
        )
        produce_events(settings, events[: len(events) // 2])
        produce(settings, settings.topics.events, [(k, v) for k, v, _ in BAD_RECORDS])
        produce_events(settings, events[len(events) // 2 :])
        done = all_committed(settings)
        wait_for(done, "every event committed")
        done.close()  # type: ignore[attr-defined]
        assert w1.worker.assigned_partitions | w2.worker.assigned_partitions == set(range(4))
        for r in (w1, w2):
            r.stop()

    assert state_counts(settings) == expected_counts(events)
    with batch_codecs() as codecs:  # what the workers wrote, as the broker keeps it
        recs = [
            parse_recommendation(r.value)
            for r in read_topic(settings, settings.topics.recommendations)
        ]
    with batch_codecs() as state_codecs:
        read_topic(settings, settings.topics.state)
    with batch_codecs() as letter_codecs:
        letters = read_topic(settings, settings.topics.deadletter)
    # lz4 by default (`kafka.compression_type`); kafka-python leaves a batch that would
    # not shrink (a lone small record) uncompressed
    assert set(codecs) == {"lz4"} == {settings.kafka.compression_type}
    assert set(state_codecs) | set(letter_codecs) <= {"lz4", "none"}
    assert state_codecs["lz4"] > 0 and letter_codecs["lz4"] > 0
    assert {r.user_id for r in recs} == {e["user_id"] for e in events}
    assert Counter(dict(r.headers)["reason"].decode() for r in letters) == Counter(
        reason for _, _, reason in BAD_RECORDS
    )
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["worker_id"] in (b"w1", b"w2")
        assert headers["source_topic"].decode() == settings.topics.events
        assert (letter.key, letter.value) in {(k, v) for k, v, _ in BAD_RECORDS}


def test_a_stopped_worker_hands_its_partitions_over_and_nothing_is_lost(
    settings: Settings,
) -> None:
    catalog, events = movielens_log(users=40, per_user=8)
    produce_catalog(settings, catalog)
    third = len(events) // 3
    first, second, last = events[:third], events[third : 2 * third], events[2 * third :]
    with workers(settings, "w1", "w2") as (w1, w2):
        wait_for(
            lambda: w1.worker.ready and w2.worker.ready,
            "both workers ready",
            why=lambda: not_ready(w1, w2),
        )
        assert w2.worker.assigned_partitions
        produce_events(settings, first)
        done = all_committed(settings)
        wait_for(done, "first third committed")
        produce_events(settings, second)
        w2.stop()  # mid-replay: its batch in hand is flushed, the rest moves to w1
        produce_events(settings, last)
        wait_for(lambda: w1.worker.assigned_partitions == set(range(4)), "w1 owns everything")
        wait_for(done, "everything committed")
        done.close()  # type: ignore[attr-defined]
        restored = w1.worker.metrics.registry.get_sample_value("interest_users_restored_total")
        assert restored and restored > 0
        w1.stop()
    assert state_counts(settings) == expected_counts(events)


def test_a_catalog_deletion_takes_effect_while_running(settings: Settings) -> None:
    catalog, events = movielens_log(users=20, per_user=10)
    produce_catalog(settings, catalog)
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    with workers(settings, "w1") as (w1,):
        wait_for(lambda: w1.worker.ready, "worker ready", why=lambda: not_ready(w1))
        produce_events(settings, first)
        done = all_committed(settings)
        wait_for(done, "first half committed")
        shown = Counter(
            item.item_id
            for r in read_topic(settings, settings.topics.recommendations)
            for item in parse_recommendation(r.value).items
        )
        gone = shown.most_common(1)[0][0]
        produce(settings, settings.topics.catalog, [(gone.encode(), None)])
        wait_for(lambda: not w1.worker.engine.has_item(gone), "deletion applied")
        before = len(read_topic(settings, settings.topics.recommendations))
        produce_events(settings, second)
        wait_for(done, "second half committed")
        done.close()  # type: ignore[attr-defined]
        w1.stop()
    later = read_topic(settings, settings.topics.recommendations)
    later_recs = [parse_recommendation(r.value) for r in later]
    assert len(later_recs) > before
    published_after = sorted(later_recs, key=lambda r: r.published_at)[before:]
    for rec in published_after:
        assert gone not in {i.item_id for i in rec.items}


def test_metrics_and_readiness_over_http(settings: Settings) -> None:
    catalog, events = movielens_log(users=10, per_user=10)
    produce_catalog(settings, catalog)

    def get(path: str, port: int) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    with workers(settings, "w1") as (w1,):
        wait_for(lambda: w1.worker.metrics_port is not None, "metrics server up")
        port = w1.worker.metrics_port
        assert port
        assert get("/healthz", port)[0] == 200
        wait_for(lambda: get("/readyz", port)[0] == 200, "/readyz 200")
        produce_events(settings, events)
        produce(settings, settings.topics.events, [(k, v) for k, v, _ in BAD_RECORDS])
        done = all_committed(settings)
        wait_for(done, "events committed")
        done.close()  # type: ignore[attr-defined]
        # the lag gauge refreshes every few seconds
        wait_for(lambda: b"interest_consumer_lag_records{" in get("/metrics", port)[1], "lag")
        status, body = get("/metrics", port)
        assert status == 200
        samples = [
            (sample.name, sample.value)
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        ]

        def total(name: str) -> float:
            return sum(value for sample, value in samples if sample == name)

        for family in (
            "interest_events_consumed_total",
            "interest_events_deadlettered_total",
            "interest_batch_size_count",
            "interest_encoder_seconds_count",
            "interest_texts_encoded_total",
            "interest_embedding_cache_misses_total",
            "interest_update_seconds_count",
            "interest_index_search_seconds_count",
            "interest_publish_seconds_count",
            "interest_recommendations_published_total",
            "interest_event_to_publish_seconds_count",
            "interest_ingest_to_publish_seconds_count",
            "interest_users_held",
            "interest_catalog_items",
            "interest_state_writes_total",
            "interest_ready",
        ):
            assert total(family) > 0, family
        assert total("interest_events_consumed_total") == len(events) + len(BAD_RECORDS)
        assert total("interest_catalog_items") == len(catalog)
        assert any(name == "interest_consumer_lag_records" for name, _ in samples)
        w1.stop()
