"""The worker's producer in a child process (``consumers.publisher.ProcessSink``) on the
embedded broker: records arrive in order, a refused record is named with the producer's
error, and a publisher that died fails the batch instead of hanging it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kafka import TopicPartition
from kafka.errors import MessageSizeTooLargeError

from consumers.bounded import PublishError
from consumers.publisher import ProcessSink
from consumers.sinks import OutgoingRecord
from interest_core.settings import Settings
from producers.kafka_client import make_consumer
from producers.topics import create_topics
from tests.integration.survival import wait_until, worker_thread

pytestmark = pytest.mark.integration


@contextmanager
def _sink(settings: Settings, *, max_request_size: int = 1_048_576) -> Iterator[ProcessSink]:
    """A publisher process for the test, closed after it (a dead one too)."""
    sink = ProcessSink(settings, name="test", max_request_size=max_request_size, linger_ms=0)
    try:
        yield sink
    finally:
        sink.close(2.0)


def _read(settings: Settings, topic: str, partitions: int, count: int) -> list[tuple[bytes, bytes]]:
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen: list[tuple[bytes, bytes]] = []
    for _ in range(100):
        for records in consumer.poll(timeout_ms=200).values():
            seen.extend((r.key, r.value) for r in records)
        if len(seen) >= count:
            break
    consumer.close()
    return seen


def test_records_arrive_in_order_and_are_acknowledged(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    topic = kafka_settings.topics.recommendations
    with _sink(kafka_settings) as sink:
        assert sink.pid is not None and sink.pid != os.getpid()
        for n in range(300):  # one key: one partition, so the order is the send order
            sink.send(OutgoingRecord(topic, b"u1", b"%d" % n))
        sink.flush()
        assert sink.acknowledged() and sink.acked_at > 0
        for n in range(300, 310):  # a second message after the first was answered
            sink.send(OutgoingRecord(topic, b"u1", b"%d" % n, (("h", b"v"),)))
        sink.flush()
    got = _read(kafka_settings, topic, kafka_settings.topics.recommendations_partitions, 310)
    assert [int(v) for _, v in got] == list(range(310))


def test_a_record_too_large_is_refused_at_once_and_the_rest_delivered(
    kafka_settings: Settings,
) -> None:
    create_topics(kafka_settings)
    topic = kafka_settings.topics.deadletter
    with _sink(kafka_settings, max_request_size=10_000) as sink:
        with pytest.raises(MessageSizeTooLargeError):
            sink.send(OutgoingRecord(topic, b"k", b"x" * 20_000))
        sink.send(OutgoingRecord(topic, b"k", b"small"))
        sink.flush()
    assert _read(kafka_settings, topic, 1, 1) == [(b"k", b"small")]


def test_the_producers_refusal_names_the_record_and_its_error(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    good = OutgoingRecord(kafka_settings.topics.deadletter, b"k", b"fine")
    # A topic name kafka-python refuses before the wire (illegal characters).
    bad = OutgoingRecord("not a topic!", b"k", b"v")
    with _sink(kafka_settings) as sink:
        sink.send(good)
        sink.send(bad)
        with pytest.raises(PublishError) as raised:
            sink.flush()
    assert [record for record, _ in raised.value.failed] == [bad]
    assert all(isinstance(error, Exception) for _, error in raised.value.failed)


def test_a_dead_publisher_fails_the_batch(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    with _sink(kafka_settings) as sink:
        assert sink.pid is not None
        assert sink.alive
        os.kill(sink.pid, signal.SIGKILL)
        sink._process.join(10)
        assert not sink.alive  # the worker's liveness says so (not_alive_reasons)
        sink.send(OutgoingRecord(kafka_settings.topics.deadletter, b"k", b"v"))
        with pytest.raises(PublishError, match="publisher process"):
            sink.flush()


def test_ctrl_c_to_the_process_group_leaves_the_publisher_to_the_worker(
    kafka_settings: Settings,
) -> None:
    """SIGINT and SIGTERM reach the whole process group (a terminal's Ctrl-C): the worker
    still publishes its last batch through the child while it stops."""
    create_topics(kafka_settings)
    topic = kafka_settings.topics.deadletter
    with _sink(kafka_settings) as sink:
        assert sink.pid is not None
        os.kill(sink.pid, signal.SIGINT)
        os.kill(sink.pid, signal.SIGTERM)
        sink.send(OutgoingRecord(topic, b"k", b"last batch"))
        sink.flush()
    assert _read(kafka_settings, topic, 1, 1) == [(b"k", b"last batch")]


def test_a_worker_whose_publisher_died_is_not_alive(kafka_settings: Settings) -> None:
    """The worker's liveness (``/healthz``) names a publisher process that exited, before
    any batch would find out."""
    from prometheus_client import CollectorRegistry

    from interest_core.encoder import HashingEncoder

    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    create_topics(settings)
    registry = CollectorRegistry()
    with worker_thread(settings, HashingEncoder(), worker_id="w-pub", registry=registry) as running:
        worker = running.worker
        pid = worker.publisher_pid
        assert pid is not None and pid != os.getpid()
        assert "publisher process exited" not in worker.not_alive_reasons()
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: "publisher process exited" in worker.not_alive_reasons(),
            10.0,
            "the worker names its dead publisher",
            every_s=0.05,
        )
