"""Steady-load latency for ``interest bench``: a paced sender in its own process, every
event's ingest -> publish time from the worker's publication hook.

The sender runs in a separate process (a producer in the worker's process would take
the interpreter lock from the worker it measures) and replays the stream's event lines
at a fixed rate for a fixed time, cycling through them as new users (:func:`replayed`).
Each record carries its send time as its Kafka timestamp, so the worker's
:class:`~consumers.latency.BatchLatency` of every published batch times every event:
ingest -> publish (the broker's acknowledgement of the batch's records) and its stages
(``kafka``, ``batch_wait``, ``process``, ``publish``). A subscriber on the
recommendations topic, in a process of its own too (as a product reading the topic
would be; in the worker's process its client took about a tenth of the interpreter lock
at a tenth of the rate), adds ingest -> subscriber for the events that triggered a record.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from consumers.harness.report import percentiles
from consumers.latency import STAGES, BatchLatency, processing_load
from interest_core.settings import Settings

__all__ = [
    "WARMUP_S",
    "WINDOW_S",
    "broker_hop",
    "latency_windows",
    "replayed",
    "steady_latency",
]

log = logging.getLogger(__name__)

#: Seconds at the start of a run left out of the percentiles (connections, first fetches).
WARMUP_S = 1.0
#: Shortest sleep of the bench's sender between sends (under its producer's 5 ms linger,
#: so the broker sees the same requests).
SEND_TICK_S = 0.002
#: Seconds per window of the latency's course over a run (``windows``).
WINDOW_S = 10.0


def _percentiles_ms(seconds: np.ndarray) -> dict[str, float]:
    """p50/p95/p99 in milliseconds of ``seconds`` (empty for none)."""
    return percentiles(seconds * 1000.0)


def latency_windows(since_start: np.ndarray, latency: np.ndarray) -> list[dict[str, Any]]:
    """Percentiles (ms) of ``latency`` (seconds) per :data:`WINDOW_S` seconds of a run,
    by each event's ingest time ``since_start`` (seconds): a latency that drifts during a
    steady load shows here, not in the run's percentiles. Empty windows are left out."""
    out: list[dict[str, Any]] = []
    if not latency.size:
        return out
    index = (since_start // WINDOW_S).astype(np.int64)
    for w in range(int(index.max()) + 1):
        inside = latency[index == w]
        if inside.size:
            out.append(
                {"from_s": w * WINDOW_S, "events": int(inside.size), **_percentiles_ms(inside)}
            )
    return out


def replayed(lines: Sequence[bytes], total: int, tag: str) -> list[tuple[str, bytes, bytes]]:
    """``total`` events from ``lines`` (contract JSON), cycled: ``(event_id, key, value)``
    per event, keyed by user. Each pass is new people doing what the stream's people did:
    ``~{tag}{cycle}`` is appended to every event id and user id, so no event repeats one
    the worker has seen and no user acts again on what they already took, as in the
    backlog the worker's rate is measured on. (Under their own ids the stream's users
    re-took every item they held; the worker's CPU per record at the half rate measured
    the same both ways, RESULTS.md round 12.)"""
    base = [orjson.loads(line) for line in lines]
    records: list[tuple[str, bytes, bytes]] = []
    for i in range(total):
        event = dict(base[i % len(base)])
        suffix = f"~{tag}{i // len(base)}"
        event["event_id"] = f"{event['event_id']}{suffix}"
        event["user_id"] = f"{event['user_id']}{suffix}"
        records.append((event["event_id"], event["user_id"].encode(), orjson.dumps(event)))
    return records


def _send(
    settings: Settings,
    lines: Sequence[bytes],
    rate: float,
    seconds: float,
    tag: str,
    connection: Any,
) -> None:
    """Child process: send ``rate`` events/s for ``seconds`` (:func:`replayed`), then hand
    back ``{event_id: send time}`` and the send span through ``connection``."""
    from producers.kafka_client import make_producer

    records = replayed(lines, max(1, int(rate * seconds)), tag)
    total = len(records)
    # The project's default producer (5 ms linger): one request per record would cost the
    # broker and this process more CPU than the worker being measured. A record's
    # timestamp is taken at send, so the linger is counted in the "kafka" stage. Its
    # batches uncompressed, as the backlog's (`run_pipeline`).
    producer = make_producer(settings, compression_type=None)
    topic = settings.topics.events
    sent_at: dict[str, float] = {}
    acked: list[float] = []  # send -> the broker's acknowledgement, seconds, per record

    def on_ack(at: float, _metadata: Any) -> None:  # on the producer's network thread
        acked.append(time.time() - at)

    begin = time.perf_counter()
    i = 0
    while i < total:
        due = min(total, int((time.perf_counter() - begin) * rate) + 1)
        while i < due:
            event_id, key, value = records[i]
            now = sent_at[event_id] = time.time()
            producer.send(topic, key=key, value=value).add_callback(on_ack, now)
            i += 1
        # Wake at most every SEND_TICK_S: at 5,500 events/s a wake-up per event cost
        # this process 0.64 of a core (0.42-0.48 with the tick), taken from the worker
        # it measures.
        pause = begin + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(max(pause, SEND_TICK_S))
    producer.flush()
    span = time.perf_counter() - begin
    producer.close()
    connection.send((sent_at, span, acked))
    connection.close()


def _start_sender(
    settings: Settings, lines: Sequence[bytes], rate: float, seconds: float, tag: str
) -> tuple[Any, Any]:
    """The sender process (:func:`_send`) started, and the end of the pipe its report
    comes back on."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    sender = context.Process(
        target=_send, args=(settings, list(lines), rate, seconds, tag, child), name="bench-sender"
    )
    sender.start()
    child.close()
    return sender, parent


def _subscribe(settings: Settings, stop: Any, connection: Any) -> None:
    """Child process: read the recommendations topic from its end until ``stop`` is set,
    then hand back ``[(trigger_event_id, unix time received)]`` through ``connection``
    (after ``"ready"`` once positioned at the end)."""
    from kafka import TopicPartition

    from producers.kafka_client import make_consumer

    subscriber = make_consumer(settings, group_id=None, auto_offset_reset="latest")
    partitions = [
        TopicPartition(settings.topics.recommendations, p)
        for p in range(settings.topics.recommendations_partitions)
    ]
    subscriber.assign(partitions)
    subscriber.seek_to_end(*partitions)
    for tp in partitions:
        subscriber.position(tp)
    connection.send("ready")
    received: list[tuple[str, float]] = []
    while not stop.is_set():
        for records in subscriber.poll(timeout_ms=50).values():
            now = time.time()
            for record in records:
                if record.value is not None:
                    trigger = orjson.loads(record.value).get("trigger_event_id")
                    received.append((str(trigger), now))
    subscriber.close()
    connection.send(received)
    connection.close()


def steady_latency(
    settings: Settings,
    lines: Sequence[bytes],
    rate: float,
    seconds: float,
    published: list[BatchLatency],
    *,
    tag: str = "",
    drain_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Send ``lines`` (cycled) at ``rate`` events/s for ``seconds`` to a worker already
    running on ``settings``' topics, whose publication hook appends to ``published``.
    ``tag`` keeps the event ids of separate runs apart.

    Returns the achieved send rate, events measured, ingest -> publish percentiles (ms)
    over every event sent after the first :data:`WARMUP_S` seconds, the same per stage,
    the micro-batches' mean size, and ingest -> subscriber percentiles for the events
    that triggered a recommendation record.
    """
    if rate <= 0 or seconds <= 0 or not lines:
        raise ValueError("rate, seconds and lines must be positive")
    context = multiprocessing.get_context("spawn")
    stop_reading = context.Event()
    from_reader, to_parent = context.Pipe(duplex=False)
    reader = context.Process(
        target=_subscribe,
        args=(settings, stop_reading, to_parent),
        name="bench-subscriber",
        daemon=True,
    )
    reader.start()
    to_parent.close()
    try:
        ready = from_reader.recv() if from_reader.poll(60.0) else None
    except EOFError:  # it exited before saying so (its error is on stderr)
        ready = None
    if ready != "ready":
        reader.terminate()
        raise RuntimeError(
            "the bench's subscriber did not reach the end of the recommendations topic"
        )
    first_batch = len(published)
    started = time.time()
    sender, parent = _start_sender(settings, lines, rate, seconds, tag)
    try:
        sent_at, span, acked = parent.recv()
    finally:
        sender.join(60)
    expected = len(sent_at)
    deadline = time.monotonic() + drain_timeout_s
    while time.monotonic() < deadline:
        if sum(b.events for b in published[first_batch:]) >= expected:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # the subscriber's last fetch
    stop_reading.set()
    received: list[tuple[str, float]] = (
        from_reader.recv() if from_reader.poll(drain_timeout_s) else []
    )
    reader.join(60)

    batches = [b for b in published[first_batch:] if b.events]
    send_start = min(sent_at.values(), default=started)
    measured = np.concatenate([b.ingested for b in batches]) if batches else np.empty(0)
    keep = measured >= send_start + WARMUP_S
    total = np.concatenate([b.ingest_to_publish() for b in batches])[keep] if batches else measured
    stages = {
        stage: _percentiles_ms(np.concatenate([b.stages()[stage] for b in batches])[keep])
        if batches
        else {}
        for stage in STAGES
    }
    windows = latency_windows(measured[keep] - send_start, total)
    to_subscriber = np.array(
        [at - sent_at[trigger] for trigger, at in received if trigger in sent_at], dtype=float
    )
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "achieved_send_rate_events_per_s": expected / span if span > 0 else None,
        "events_sent": expected,
        "events_published": int(sum(b.events for b in batches)),
        "events_measured": int(total.size),
        "warmup_s": WARMUP_S,
        "ingest_to_publish_ms": _percentiles_ms(total),
        "ingest_to_publish_max_ms": float(total.max() * 1000.0) if total.size else None,
        # The sender's side of the "kafka" stage: its own producer (5 ms linger, in a
        # process that shares the machine's cores) until the broker acknowledged.
        "send_to_broker_ack_ms": _percentiles_ms(np.asarray(acked, dtype=np.float64)),
        "stages_ms": stages,
        "windows": windows,
        "batches": len(batches),
        "mean_batch_records": float(np.mean([b.records for b in batches])) if batches else None,
        # The worker's thread over the run's batches: what queues events when it is near 1.
        "worker_thread": processing_load(batches),
        "recommendations_matched": int(to_subscriber.size),
        "ingest_to_subscriber_ms": _percentiles_ms(to_subscriber),
    }


def broker_hop(
    settings: Settings,
    lines: Sequence[bytes],
    rate: float,
    seconds: float,
    *,
    tag: str = "hop",
    drain_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """The broker alone, and a worker that does nothing, under the load a latency run
    puts on them: the same sender sends ``lines`` at ``rate`` events/s for ``seconds``
    to a fresh topic with as many partitions as the events topic; a bare group-less
    consumer in this process (the fetch settings of the worker's events consumer) takes
    them and, like a worker with nothing to compute, publishes two records per user of
    each poll (to fresh recommendation and state topics) through the worker's publisher
    process and waits for their acknowledgement before the next poll. Returns, after
    :data:`WARMUP_S`, the record timestamp -> poll percentiles (ms; ``kafka_ms``: the
    floor under the worker's ``kafka`` stage, also per :data:`WINDOW_S` window) and
    record timestamp -> acknowledged (``ingest_to_ack_ms``: the floor under its ingest
    -> publish).

    On the embedded broker a fetch lists every batch stored in the partition, so this
    floor rises with the partition's history during a run (``docs/RESULTS.md``)."""
    from kafka import TopicPartition

    from consumers.publisher import ProcessSink
    from consumers.sinks import OutgoingRecord
    from producers.kafka_client import make_consumer
    from producers.topics import create_topics

    if rate <= 0 or seconds <= 0 or not lines:
        raise ValueError("rate, seconds and lines must be positive")
    hop = settings.replace(
        topics={
            name: f"{getattr(settings.topics, name)}.{tag}"
            for name in ("events", "recommendations", "state")
        }
    )
    create_topics(hop)
    consumer = make_consumer(hop, group_id=None, auto_offset_reset="earliest")
    partitions = [TopicPartition(hop.topics.events, p) for p in range(hop.topics.events_partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    # The worker's producer settings (consumers.worker._open_sink): linger 0, in a child.
    publisher = ProcessSink(hop, name=f"bench-{tag}-publisher", linger_ms=0)
    sender, parent = _start_sender(hop, lines, rate, seconds, tag)
    stamped: list[float] = []
    polled: list[float] = []
    acked: list[float] = []
    expected: int | None = None
    span = 0.0
    deadline = time.monotonic() + seconds + 60.0 + drain_timeout_s
    try:
        while time.monotonic() < deadline and (expected is None or len(stamped) < expected):
            got = consumer.poll(timeout_ms=50)
            now = time.time()
            users: dict[bytes | None, bytes] = {}
            for records in got.values():
                for record in records:
                    stamped.append(record.timestamp / 1000.0)
                    users[record.key] = record.value
            if users:
                for key, value in users.items():
                    publisher.send(OutgoingRecord(hop.topics.recommendations, key, value))
                    publisher.send(OutgoingRecord(hop.topics.state, key, value))
                publisher.flush()
                done = time.time()
                polled.extend([now] * (len(stamped) - len(polled)))
                acked.extend([done] * (len(stamped) - len(acked)))
            if expected is None and parent.poll(0):
                try:
                    sent_at, span, _acked = parent.recv()
                except EOFError:  # the sender died (its error is on stderr)
                    raise RuntimeError("the bench's hop sender exited without a report") from None
                expected = len(sent_at)
    finally:
        sender.join(60)
        consumer.close()
        publisher.close()
    at = np.asarray(stamped, dtype=np.float64)
    hop_s = np.maximum(np.asarray(polled, dtype=np.float64) - at, 0.0)
    ack_s = np.maximum(np.asarray(acked, dtype=np.float64) - at, 0.0)
    start = float(at.min()) if at.size else 0.0
    keep = at >= start + WARMUP_S
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "achieved_send_rate_events_per_s": expected / span if expected and span > 0 else None,
        "events_sent": expected,
        "events_received": len(stamped),
        "events_measured": int(keep.sum()),
        "kafka_ms": _percentiles_ms(hop_s[keep]),
        "ingest_to_ack_ms": _percentiles_ms(ack_s[keep]),
        "windows": latency_windows(at[keep] - start, hop_s[keep]),
    }
