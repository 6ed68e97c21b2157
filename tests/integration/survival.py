"""Helpers shared by the survival tests (crash, outage, hostile input, privacy).

They read topics to their end with group-less consumers, publish raw records, decode the
state topic through the core's own deserialisation, and wait for a consumer group to
have committed everything.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from kafka import TopicPartition

from consumers.state_store import StateReader, partition_for_key
from consumers.worker import Worker
from interest_core.encoder import Encoder
from interest_core.interest import UserState
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer

__all__ = [
    "POKE_KEY",
    "WorkerThread",
    "committed_everything",
    "end_offsets",
    "expected_counts",
    "final_states",
    "publish_catalog",
    "publish_raw",
    "read_topic",
    "reveal_tail",
    "state_counts",
    "wait_until",
    "worker_thread",
]

#: Per user, events applied by type.
Counts = dict[str, dict[str, int]]
#: A record with Kafka headers: ``(key, value, ((name, bytes), ...))``.
Raw = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    """Poll ``check`` every ``every_s`` seconds until it is true; AssertionError after
    ``timeout_s`` seconds (a bound on a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")


#: Key of the one-record batches :func:`reveal_tail` writes; readers here skip it.
POKE_KEY = b"__hw_poke__"


def _partition_of(key: bytes | None, partitions: int, counter: list[int]) -> int:
    if key is None:
        counter[0] += 1
        return counter[0] % partitions
    return partition_for_key(key, partitions)


def publish_raw(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None] | Raw],
    *,
    compression_type: str | None = None,
) -> int:
    """Send ``(key, value)`` byte pairs (or ``(key, value, headers)``) untouched, in
    order per partition, in batches compressed with ``compression_type`` (gzip, lz4,
    zstd; None: none); every send is checked. Returns how many. Values up to 4 MiB.

    Works around the embedded broker hiding the tail of the last multi-record batch of a
    partition (see docs/GUARANTEES.md): the last record of each partition is sent alone,
    after the rest is acknowledged, so every record is visible when this returns. Keyed
    records go where Kafka's default partitioner puts them.
    """
    pending = [(r[0], r[1], list(r[2]) if len(r) > 2 else []) for r in records]  # type: ignore[misc]
    producer = make_producer(
        settings,
        linger_ms=20,
        max_request_size=5 * 1024 * 1024,
        compression_type=compression_type,
    )
    try:
        count = len(producer.partitions_for(topic))
        round_robin = [0]
        placed = [(_partition_of(k, count, round_robin), k, v, h) for k, v, h in pending]
        last = {partition: i for i, (partition, _, _, _) in enumerate(placed)}
        tail = set(last.values())
        futures = [
            producer.send(topic, key=k, value=v, partition=p, headers=h)
            for i, (p, k, v, h) in enumerate(placed)
            if i not in tail
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
        for i in sorted(tail):
            p, k, v, h = placed[i]
            producer.send(topic, key=k, value=v, partition=p, headers=h).get(timeout=30)
        return len(placed)
    finally:
        producer.close()


def reveal_tail(settings: Settings, topic: str) -> None:
    """Write one single-record batch (a :data:`POKE_KEY` tombstone) to every partition of
    ``topic`` so the embedded broker exposes everything written before it."""
    producer = make_producer(settings)
    try:
        for partition in sorted(producer.partitions_for(topic)):
            producer.send(topic, key=POKE_KEY, value=None, partition=partition).get(timeout=30)
    finally:
        producer.close()


def publish_catalog(settings: Settings, catalog: Sequence[Mapping[str, Any]]) -> int:
    """Publish catalog items keyed by ``item_id``."""
    return publish_raw(
        settings,
        settings.topics.catalog,
        ((str(item["item_id"]).encode(), orjson.dumps(item)) for item in catalog),
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Next offset to be written, per partition of ``topic``."""
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps) if tps else {}
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end offsets now, per partition
    in offset order (kafka-python ``ConsumerRecord``s). Reveals the tail first
    (:func:`reveal_tail`) and leaves the pokes out."""
    reveal_tail(settings, topic)
    consumer = make_consumer(
        settings, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500, max_records=50_000).items():
                out.extend(r for r in records if r.offset < ends[tp] and r.key != POKE_KEY)
            for tp in list(pending):
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        consumer.close()


def committed_everything(settings: Settings) -> bool:
    """True when the worker group's committed offsets reach the events topic's end offsets."""
    ends = end_offsets(settings, settings.topics.events)
    # A consumer that never subscribes does not join the group; it only reads its offsets.
    consumer = make_consumer(
        settings, group_id=settings.consumer.group_id, enable_auto_commit=False
    )
    try:
        for partition, end in ends.items():
            if end == 0:
                continue
            committed = consumer.committed(TopicPartition(settings.topics.events, partition))
            if committed is None or committed < end:
                return False
        return True
    except Exception:
        return False
    finally:
        consumer.close(autocommit=False)


def final_states(settings: Settings) -> dict[str, UserState | None]:
    """Latest state per user on the state topic, decoded by the core (``UserState``);
    None for a deleted user (tombstone)."""
    reveal_tail(settings, settings.topics.state)
    reader = StateReader(settings, timeout_s=60.0)
    try:
        entries = reader.read()
    finally:
        reader.close()
    return {
        user_id: None if entry.blob is None else UserState.from_bytes(entry.blob)
        for user_id, entry in entries.items()
        if user_id != POKE_KEY.decode()
    }


def state_counts(settings: Settings) -> tuple[Counts, dict[str, None]]:
    """Per live user, events applied by type (from :func:`final_states`); and the
    deleted users (a set-like dict)."""
    counts: Counts = {}
    deleted: dict[str, None] = {}
    for user_id, state in final_states(settings).items():
        if state is None:
            deleted[user_id] = None
        else:
            counts[user_id] = dict(state.counts)
    return counts, deleted


def expected_counts(events: Iterable[Mapping[str, Any]]) -> Counts:
    """Per user, valid events by type, as the state should count them (deletes excluded)."""
    out: dict[str, Counter[str]] = {}
    for event in events:
        if event["type"] != "delete_user":
            out.setdefault(str(event["user_id"]), Counter())[str(event["type"])] += 1
    return {user: dict(counter) for user, counter in out.items()}


class WorkerThread:
    """A :class:`Worker` running its Kafka loop in a thread of this process."""

    def __init__(self, settings: Settings, encoder: Encoder | None = None, **kwargs: Any) -> None:
        self.worker = Worker(settings, encoder, **kwargs)
        self.error: BaseException | None = None
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)

    def _run(self) -> None:
        try:
            self.status = self.worker.run(self._stop)
        except BaseException as exc:  # reported by the test, never swallowed
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, ready_timeout_s: float = 90.0) -> WorkerThread:
        """Start the loop and wait (up to ``ready_timeout_s`` s) until it reports ready."""
        self._thread.start()
        if not self.worker.wait_ready(ready_timeout_s):
            reasons = self.worker.not_ready_reasons()
            # Stopped before failing: a loop left running would keep its publisher
            # process waiting on the pipe, and the test session would never exit.
            self._stop.set()
            self._thread.join(30.0)
            raise AssertionError(f"worker not ready: {reasons} (error: {self.error!r})")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError("the worker thread did not stop")


@contextlib.contextmanager
def worker_thread(
    settings: Settings, encoder: Encoder | None = None, **kwargs: Any
) -> Iterator[WorkerThread]:
    """A started :class:`WorkerThread`, stopped on exit."""
    running = WorkerThread(settings, encoder, **kwargs).start()
    try:
        yield running
    finally:
        running.stop()
