"""``interest worker``: one member of the events consumer group.

The loop, Quix-``Checkpoint`` style::

    poll ─► MicroBatcher (max_events / max_wait_ms; adaptive: due once drained)
         ─► process_records: parse at the edge, bad records ─► dead-letter plan
                             Engine.process(valid events) ─► state + recommendation plan
         ─► publish: send every planned record, flush the producer
         ─► ONLY THEN commit the batch's offsets

Publishing is pipelined one batch deep: batch N's records are sent (not awaited), and
while the broker acknowledges them the worker polls and processes batch N+1; before
sending N+1 it waits for N's acknowledgements and commits N's offsets. With nothing
polled it waits for them at once. Offsets are still committed only after their batch's
records are acknowledged, and records leave in batch order (idempotent producer).

State is durable because it is published before offsets are committed and the Engine
skips events whose offset is at or below a user's last applied offset: after a crash
the events since the last commit are read again and skipped where already applied.

On partition assignment the new partitions are paused (in the rebalance listener, on
kafka-python's IO thread, which must not block: it sends the heartbeats); the worker
thread then restores their users from the state topic, behind a read-your-writes
barrier (``consumers.barrier``), before it resumes them, so no event of theirs is
processed before its user's newest state is in memory. A restore that fails (broker
unreachable) is retried; the partitions stay paused meanwhile. On revocation the batch
in hand is processed, published and committed, then those users leave memory.

Readiness also follows the broker: ``/readyz`` turns 503 (``broker_unreachable``) when
no Kafka round trip (a commit, a flushed publish, a lag refresh) has succeeded for
``max(consumer.session_timeout_ms, 5 s)``, and 200 again once one does.

Idle users (no event for ``state.user_ttl_s`` seconds of wall clock), then the least
recently active beyond ``state.max_users``, are evicted from memory (checked every
``min(60, user_ttl_s / 4)`` seconds, at least 1); the worker remembers their ids (and partition) and, when one of them has events
in a later batch, reloads its state from the state topic before processing the batch.

``process_records`` is the same step the Kafka loop runs, usable with no broker (the
pipeline tests drive it with a :class:`MemorySink`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata

from consumers.barrier import is_barrier
from consumers.batching import InputRecord, MicroBatcher, next_offsets
from consumers.bounded import BoundedPublisher, Delivery, PublishError, record_bytes
from consumers.catalog_follower import CatalogFollower
from consumers.health import HealthServer
from consumers.latency import BatchLatency
from consumers.metrics import WorkerMetrics
from consumers.state_store import StateEntry, StateReader, StateRestoreError
from interest_core.encoder import CachedEncoder, Encoder, encoder_from_settings
from interest_core.records import (
    CatalogDeletion,
    CatalogItem,
    Event,
    Rejected,
    parse_catalog,
    parse_event,
)
from interest_core.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from interest_core.engine import Engine

__all__ = [
    "KafkaSink",
    "MemorySink",
    "OutgoingRecord",
    "PublishError",
    "PublishPlan",
    "Sink",
    "StateSource",
    "Worker",
    "configure",
    "run",
]

log = logging.getLogger(__name__)

#: Milliseconds a poll waits while a batch's acknowledgements are outstanding.
IN_FLIGHT_POLL_MS = 2
#: Seconds between consumer-lag refreshes.
LAG_REFRESH_S = 5.0
#: The loop counts as stalled (``/healthz`` 503) after this many seconds without a tick.
STALL_AFTER_S = 120.0
#: Seconds between attempts at a restore that failed (the partitions stay paused).
RESTORE_RETRY_S = 1.0
#: Seconds between the events consumer's polls while a restore runs (keeps the member
#: within ``max_poll_interval_ms``).
RESTORE_KEEP_ALIVE_S = 0.5
#: The broker counts as unreachable after at least this many seconds without a round trip.
BROKER_SILENCE_MIN_S = 5.0
#: A worker started in a crash loop is not ready until it commits a batch or stays up this
#: long (seconds; the fleet's back-off resets after as long).
CRASH_LOOP_CLEARS_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to publish; ``value`` None is a tombstone."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class PublishPlan:
    """What one micro-batch publishes, and the offsets to commit after it is flushed.

    ``offsets`` maps ``(topic, partition)`` to the next offset to read. ``event_times``,
    ``ingest_times`` and ``polled_times`` (unix seconds) are those of the valid events,
    for latency; ``started_at`` / ``processed_at`` (unix seconds) bound the processing.
    """

    records_in: int = 0
    dead_letters: list[OutgoingRecord] = field(default_factory=list)
    states: list[OutgoingRecord] = field(default_factory=list)
    recommendations: list[OutgoingRecord] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    event_times: list[float] = field(default_factory=list)
    ingest_times: list[float] = field(default_factory=list)
    polled_times: list[float] = field(default_factory=list)
    duplicates: int = 0
    started: float = 0.0  # perf_counter at the start of processing
    started_at: float = 0.0  # unix seconds, the same instant
    sent: float = 0.0  # perf_counter when its records were handed to the sink
    sent_at: float = 0.0  # unix seconds, the same instant
    send_s: float = 0.0  # seconds spent handing its records to the sink
    processed_at: float = 0.0  # unix seconds, end of processing
    encode_s: float = 0.0
    delivery: Delivery[OutgoingRecord] | None = None  # handed to the sink, not yet acknowledged

    @property
    def outgoing(self) -> list[OutgoingRecord]:
        """Every record to send: dead letters, recommendations, then user states.

        States go last: the producer sends in this order on one connection per broker,
        so a state on the state topic means its batch's recommendations were sent before
        it. A crash in between re-publishes a version (GUARANTEES 3); the other order
        would lose one (state persisted, recommendation not).
        """
        return [*self.dead_letters, *self.recommendations, *self.states]

    @property
    def tombstones(self) -> int:
        return sum(1 for r in self.states if r.value is None) + sum(
            1 for r in self.recommendations if r.value is None
        )


class Sink(Protocol):
    """Where planned records go: ``send`` each (raises for a record it refuses outright,
    e.g. too large), then ``flush`` (raises :class:`PublishError` listing the failed)."""

    def send(self, record: OutgoingRecord) -> None: ...

    def flush(self) -> None: ...


class StateSource(Protocol):
    """Reads users' latest state (see :class:`consumers.state_store.StateReader`)."""

    def read(
        self,
        partitions: Collection[int] | None = None,
        *,
        users: Collection[str] | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, StateEntry]: ...


class MemorySink:
    """A sink that keeps what is flushed, in order: the pipeline harness's Kafka.

    ``max_record_bytes`` (key + value + headers) makes it refuse bigger records in
    ``send`` as a producer does (``MessageSizeTooLargeError``); None accepts any size.
    """

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


class KafkaSink:
    """Sends through a kafka-python producer; ``flush`` raises :class:`PublishError`.

    ``acked_at`` is the unix time of the latest acknowledgement (set on the producer's
    IO thread), so a batch whose flush is awaited late is still timed at its ack.
    """

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._futures: list[tuple[OutgoingRecord, Any]] = []
        self.acked_at = 0.0

    def _acked(self, _metadata: Any) -> None:
        self.acked_at = time.time()

    def send(self, record: OutgoingRecord) -> None:
        """Queue ``record``; raises ``MessageSizeTooLargeError`` when the producer refuses it."""
        future = self.producer.send(
            record.topic, key=record.key, value=record.value, headers=list(record.headers)
        )
        future.add_callback(self._acked)
        self._futures.append((record, future))

    def acknowledged(self) -> bool:
        """True when every record sent since the last flush has its answer (or failed)."""
        return all(future.is_done for _, future in self._futures)

    def flush(self) -> None:
        self.producer.flush()
        futures, self._futures = self._futures, []
        failed = [(record, f.exception) for record, f in futures if f.failed()]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(futures)} records not delivered: {failed[0][1]}", failed
            )


# --------------------------------------------------------------------------- worker


class Worker:
    """One worker: the Kafka loop (:meth:`run`) around a broker-free step (:meth:`process_records`).

    ``encoder`` defaults to the one the settings choose (the real model unless
    ``encoder.backend = "hashing"``); a given encoder gets an embedding cache in front
    unless it is a ``CachedEncoder`` already. ``engine`` may be given instead (it then
    owns its encoder). ``registry`` is the Prometheus registry the metrics live on (a fresh one by
    default). ``state_source`` reads state back for evicted users; :meth:`run` makes a
    :class:`StateReader` when none was given. ``on_published`` is called with each
    published batch's :class:`~consumers.latency.BatchLatency` once its records are
    acknowledged (the bench's per-event latencies), on the worker thread.
    """

    def __init__(
        self,
        settings: Settings,
        encoder: Encoder | None = None,
        *,
        worker_id: str | None = None,
        registry: CollectorRegistry | None = None,
        engine: Engine | None = None,
        state_source: StateSource | None = None,
        on_published: Callable[[BatchLatency], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_published = on_published
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = WorkerMetrics(registry)
        if engine is None:
            from interest_core.engine import Engine

            if encoder is None:
                encoder = encoder_from_settings(settings.encoder)
            elif not isinstance(encoder, CachedEncoder):
                # The batch's repeated texts and the cache metrics need the LRU in front.
                encoder = CachedEncoder(encoder, settings.encoder.cache_size)
            engine = Engine(encoder, settings)
        self.engine = engine
        self.batcher = MicroBatcher(
            settings.batch.max_events,
            settings.batch.max_wait_ms / 1000.0,
            adaptive=settings.batch.adaptive,
            # A batch of costly records (new texts on a CPU encoder) stays well within
            # the poll interval, whatever max_events allows for cheap ones.
            max_batch_s=settings.consumer.max_poll_interval_ms / 1000.0 / 5.0,
        )
        self.publisher = BoundedPublisher(
            max_bytes=settings.limits.max_publish_bytes,
            deadletter_topic=settings.topics.deadletter,
            state_topic=settings.topics.state,
            recommendations_topic=settings.topics.recommendations,
            hooks=self.metrics,
        )
        self.state_source = state_source
        self.metrics_port: int | None = None
        self._user_partition: dict[str, int] = {}  # user -> events partition, users in memory
        self._evicted: dict[str, int] = {}  # user -> events partition, evicted while idle
        self._assigned: set[int] = set()  # events partitions owned
        self._catalog_caught_up = False
        self._alive = False
        self._last_tick = time.monotonic()
        self._sink: Sink | None = None
        self._in_flight: PublishPlan | None = None  # sent, not yet acknowledged nor committed
        self._consumer: Any = None
        self._stop = threading.Event()
        self._next_eviction = time.monotonic() + self._eviction_interval()
        self._next_lag = 0.0
        # events partition -> assignment epoch, for partitions paused until restored
        self._restoring: dict[int, int] = {}
        self._assign_epoch = 0
        self._next_restore_try = 0.0
        self._next_keep_alive = 0.0
        self._next_probe = 0.0
        self._last_broker_ok: float | None = None  # monotonic time of the last round trip
        # Set by `interest fleet` after repeated exits (see :meth:`restarted`): a readiness
        # reason until a batch is committed or the worker has stayed up a minute.
        self._crash_loop: str | None = None
        self._started = time.monotonic()
        self._in_hand: dict[tuple[str, int], int] = {}  # first offset per partition, batch in hand
        #: Where :meth:`run` writes a crash report (JSON) when it ends on an exception.
        self.crash_file: str | None = None
        self.broker_silence_s = max(
            settings.consumer.session_timeout_ms / 1000.0, BROKER_SILENCE_MIN_S
        )

    # ------------------------------------------------------------ broker-free step

    def apply_catalog_records(self, records: Sequence[InputRecord]) -> None:
        """Apply catalog records in order: upserts batched, deletions where they fall."""
        upserts: dict[str, CatalogItem] = {}

        def flush_upserts() -> None:
            if upserts:
                self.engine.upsert_items(list(upserts.values()))
                self.metrics.catalog_applied("upsert", len(upserts))
                upserts.clear()

        for record in records:
            if is_barrier(record.key):  # a read-your-writes marker, not a catalog record
                continue
            parsed = parse_catalog(record.key, record.value)
            if isinstance(parsed, Rejected):
                log.warning(
                    "catalog record %s rejected: %s (%s)",
                    record.source,
                    parsed.reason,
                    parsed.detail,
                )
                self.metrics.catalog_applied(parsed.reason)
            elif isinstance(parsed, CatalogDeletion):
                upserts.pop(parsed.item_id, None)
                flush_upserts()
                self.engine.delete_items([parsed.item_id])
                self.metrics.catalog_applied("delete")
            else:
                upserts.pop(parsed.item_id, None)  # keep the latest, in arrival order
                upserts[parsed.item_id] = parsed
        flush_upserts()
        self._update_gauges()

    def process_records(self, records: Sequence[InputRecord]) -> PublishPlan:
        """Parse, validate and process one micro-batch; returns what to publish and commit.

        Touches no broker: bad records become dead-letter records, valid events go
        through ``Engine.process`` in one call. The caller publishes the plan (see
        :meth:`publish`) and commits ``plan.offsets`` only after the flush.
        """
        plan = PublishPlan(
            records_in=len(records), started=time.perf_counter(), started_at=time.time()
        )
        plan.offsets = next_offsets(records)
        limits = self.settings.limits
        events: list[Event] = []
        source: dict[int, InputRecord] = {}
        types: list[str] = []
        for record in records:
            parsed: Event | Rejected
            if record.value is None:
                parsed = Rejected("null_value", "event record has a null value")
            else:
                parsed = parse_event(
                    record.value,
                    fallback_id=record.source,
                    offset=record.offset,
                    max_text_chars=limits.max_text_chars,
                    max_record_bytes=limits.max_record_bytes,
                )
            if isinstance(parsed, Rejected):
                types.append("invalid")
                self._dead_letter(plan, record, parsed)
            else:
                types.append(parsed.type)
                events.append(parsed)
                source[id(parsed)] = record
        parse_s = time.perf_counter() - plan.started
        self.metrics.records_consumed(types)
        for event in events:
            self._user_partition[event.user_id] = source[id(event)].partition
        self._reload_evicted(events, source)

        stats: Any = None
        if events:
            outcome = self._process_events(events)
            stats = outcome.stats
            plan.duplicates = outcome.duplicates
            rejected_keys: set[tuple[str, str, int | None]] = set()
            # Only needed when the engine hands back copies (the one-by-one retry path).
            by_identity = (
                {(e.user_id, e.event_id, e.offset): source[id(e)] for e in events}
                if outcome.rejected
                else {}
            )
            for event, why in outcome.rejected:
                key = (event.user_id, event.event_id, event.offset)
                rejected_keys.add(key)
                origin = source.get(id(event)) or by_identity.get(key)
                if origin is None:
                    log.error("engine rejected an event not in the batch: %s", event.event_id)
                    continue
                self._dead_letter(plan, origin, why)
            for event in events:
                if (event.user_id, event.event_id, event.offset) not in rejected_keys:
                    plan.event_times.append(event.ts)
                    origin = source[id(event)]
                    plan.ingest_times.append(origin.ingested_at)
                    plan.polled_times.append(origin.polled_at)
            topics = self.settings.topics
            for user_id in outcome.changed_users:
                blob = self.engine.export_user(user_id)
                plan.states.append(OutgoingRecord(topics.state, user_id.encode(), blob))
            for rec in outcome.recommendations:
                plan.recommendations.append(
                    OutgoingRecord(topics.recommendations, rec.user_id.encode(), rec.to_json())
                )
            for user_id in outcome.deleted_users:
                key = user_id.encode()
                plan.states.append(OutgoingRecord(topics.state, key, None))
                plan.recommendations.append(OutgoingRecord(topics.recommendations, key, None))
                self._user_partition.pop(user_id, None)
                self._evicted.pop(user_id, None)

        plan.encode_s = getattr(stats, "encode_s", 0.0)
        plan.processed_at = time.time()
        self.metrics.batch_done(
            size=len(records),
            parse_s=parse_s,
            encode_s=getattr(stats, "encode_s", 0.0),
            update_s=getattr(stats, "update_s", 0.0),
            search_s=getattr(stats, "search_s", 0.0),
            rank_s=getattr(stats, "rank_s", 0.0),
            texts_encoded=getattr(stats, "texts_encoded", 0),
            cache_hits=getattr(stats, "cache_hits", 0),
            cache_misses=getattr(stats, "cache_misses", 0),
            events_applied=getattr(stats, "events_applied", 0),
            duplicates=plan.duplicates,
        )
        return plan

    def publish(self, plan: PublishPlan, sink: Sink) -> None:
        """Send every planned record, bounded in size (``consumers.bounded``), and flush.

        A dead letter that cannot be delivered even truncated is counted as poison and
        skipped; raises :class:`PublishError` only when a state or recommendation could
        not be delivered for a reason other than its size (then nothing is committed).
        """
        self._send(plan, sink)
        self._acknowledged(plan, sink)

    def _send(self, plan: PublishPlan, sink: Sink) -> None:
        plan.sent = time.perf_counter()
        plan.sent_at = time.time()
        plan.delivery = self.publisher.send(plan.outgoing, sink)
        plan.send_s = time.perf_counter() - plan.sent

    def _acknowledged(self, plan: PublishPlan, sink: Sink) -> None:
        """Wait for ``plan``'s acknowledgements (retrying refusals), then metrics and the hook.

        ``interest_publish_seconds`` counts the worker's own time: sending, and this wait
        (not the next batch's processing that a pipelined wait overlapped)."""
        assert plan.delivery is not None, "a plan is sent before it is acknowledged"
        waited = time.perf_counter()
        delivered = self.publisher.complete(plan.delivery, sink)
        done = time.perf_counter()
        acked_at = time.time()
        if isinstance(sink, KafkaSink) and plan.outgoing and sink.acked_at >= plan.sent_at:
            # Awaited late (pipelined): the broker's last answer is the publication time.
            acked_at = min(acked_at, sink.acked_at)
        deadletter = self.settings.topics.deadletter
        for record in delivered:
            if record.topic == deadletter:
                self.metrics.dead_lettered(dict(record.headers)["reason"].decode())
        latency = BatchLatency(
            ingested=np.asarray(plan.ingest_times, dtype=np.float64),
            polled=np.asarray(plan.polled_times, dtype=np.float64),
            started=plan.started_at,
            processed=plan.processed_at or plan.started_at,
            acked=acked_at,
            encode_s=plan.encode_s,
            records=plan.records_in,
        )
        self.metrics.published(
            publish_s=plan.send_s + (done - waited),
            batch_s=done - plan.started,
            recommendations=sum(1 for r in plan.recommendations if r.value is not None),
            tombstones=plan.tombstones,
            state_writes=len(plan.states),
            published_at=acked_at,
            event_times=plan.event_times,
            ingest_times=plan.ingest_times,
            latency=latency,
        )
        self._update_gauges()
        if self.on_published is not None:
            self.on_published(latency)

    def handle(self, records: Sequence[InputRecord], sink: Sink) -> PublishPlan:
        """``process_records`` then ``publish``: one micro-batch end to end, minus the commit."""
        plan = self.process_records(records)
        self.publish(plan, sink)
        return plan

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Evict users idle for ``state.user_ttl_s`` seconds (wall clock), then the least
        recently active beyond ``state.max_users``; returns their ids.

        Their state is already on the state topic; their ids are remembered so that a
        later event reloads it first.
        """
        now = time.time() if now is None else now
        evicted = self.engine.evict_idle(now - self.settings.state.user_ttl_s)
        evicted += self.engine.evict_least_active(self.settings.state.max_users)
        for user_id in evicted:
            partition = self._user_partition.pop(user_id, None)
            if partition is not None:
                self._evicted[user_id] = partition
        self.metrics.evicted(len(evicted))
        self._update_gauges()
        return list(evicted)

    def restore_partitions(self, partitions: Iterable[int]) -> int:
        """Load the users of events ``partitions`` from the state topic; returns users loaded."""
        wanted = sorted(set(partitions))
        if not wanted or self.state_source is None:
            return 0
        start = time.perf_counter()
        entries = self.state_source.read(wanted)
        loaded = self._import(entries.values())
        self.metrics.state_restored(seconds=time.perf_counter() - start, users=loaded)
        log.info(
            "%s restored %d users of partitions %s in %.3f s",
            self.worker_id,
            loaded,
            wanted,
            time.perf_counter() - start,
        )
        return loaded

    def release_partitions(self, partitions: Iterable[int]) -> int:
        """Drop from memory the users of events ``partitions``; returns how many."""
        gone = set(partitions)
        users = [u for u, p in self._user_partition.items() if p in gone]
        for user_id in users:
            self.engine.forget_user(user_id)
            del self._user_partition[user_id]
        for user_id in [u for u, p in self._evicted.items() if p in gone]:
            del self._evicted[user_id]
        self.metrics.released(len(users))
        self._update_gauges()
        return len(users)

    # ------------------------------------------------------------ internals

    def _dead_letter(self, plan: PublishPlan, record: InputRecord, why: Rejected) -> None:
        headers = (
            ("reason", why.reason.encode()),
            ("detail", why.detail.encode("utf-8", "replace")[:1000]),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("worker_id", self.worker_id.encode()),
        )
        plan.dead_letters.append(
            OutgoingRecord(self.settings.topics.deadletter, record.key, record.value, headers)
        )

    def _process_events(self, events: list[Event]) -> Any:
        try:
            return self.engine.process(events, published_at=time.time())
        except Exception:
            # A bug the batch tripped on must not lose the others or stop the worker:
            # find the event(s) at fault one by one and dead-letter them.
            log.exception("batch of %d events failed; retrying them one at a time", len(events))
        return _merge_single_outcomes(self.engine, events)

    def _import(self, entries: Iterable[StateEntry]) -> int:
        loaded = 0
        for entry in entries:
            if entry.blob is None:
                self.engine.forget_user(entry.user_id)
                self._user_partition.pop(entry.user_id, None)
            else:
                self.engine.import_user(entry.user_id, entry.blob)
                self._user_partition[entry.user_id] = entry.partition
                loaded += 1
            self._evicted.pop(entry.user_id, None)
        self._update_gauges()
        return loaded

    def _reload_evicted(self, events: Sequence[Event], source: dict[int, InputRecord]) -> None:
        if not self._evicted:
            return
        back = {e.user_id for e in events if e.user_id in self._evicted}
        if not back:
            return
        if self.state_source is None:
            log.warning("%d evicted users came back but no state source: starting fresh", len(back))
            for user_id in back:
                self._evicted.pop(user_id, None)
            return
        start = time.perf_counter()
        partitions = {self._evicted[u] for u in back}
        entries = self.state_source.read(partitions, users=back)
        loaded = self._import(entries.values())
        for user_id in back:
            self._evicted.pop(user_id, None)
        for event in events:  # the partition they come from now is authoritative
            if event.user_id in back:
                self._user_partition[event.user_id] = source[id(event)].partition
        self.metrics.state_restored(seconds=time.perf_counter() - start, users=loaded)

    def _update_gauges(self) -> None:
        self.metrics.holding(users=self.engine.users_held, catalog_items=self.engine.catalog_size)
        self.metrics.set_ready(not self.not_ready_reasons())

    def _eviction_interval(self) -> float:
        return max(1.0, min(60.0, self.settings.state.user_ttl_s / 4))

    # ------------------------------------------------------------ crash loops

    def restarted(self, restarts: int, crash_loop: str | None = None) -> None:
        """Told by the supervisor: this slot was restarted ``restarts`` times before, and
        (when given) the crash loop it is in, which ``/readyz`` then names."""
        self.metrics.restarted(restarts)
        self._crash_loop = crash_loop
        self._started = time.monotonic()
        self.metrics.set_ready(self.ready)

    def crash_report(self, error: BaseException) -> dict[str, Any]:
        """What a supervisor needs to say where the worker died: the first offset of the
        batch in hand per partition (``"topic[partition]": offset``) and the error."""
        return {
            "worker_id": self.worker_id,
            "error": f"{type(error).__name__}: {error}"[:500],
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(self._in_hand.items())},
        }

    def _write_crash_report(self, error: BaseException) -> None:
        if not self.crash_file:
            return
        try:
            with open(self.crash_file, "wb") as handle:
                handle.write(orjson.dumps(self.crash_report(error)))
        except OSError:
            log.exception("writing the crash report to %s failed", self.crash_file)

    # ------------------------------------------------------------ probes

    def not_ready_reasons(self) -> list[str]:
        """Why the worker is not ready (empty when ready)."""
        reasons = []
        if not self._alive:
            reasons.append("worker loop not running")
        if not self._catalog_caught_up:
            reasons.append("catalog loading")
        if not self._assigned:
            reasons.append("no events partitions assigned")
        if self._restoring:
            reasons.append("restoring state")
        if self._broker_unreachable():
            reasons.append("broker_unreachable")
        if self._crash_loop is not None:
            if time.monotonic() - self._started > CRASH_LOOP_CLEARS_AFTER_S:
                self._crash_loop = None
            else:
                reasons.append(f"crash_loop: {self._crash_loop}")
        return reasons

    def _broker_unreachable(self) -> bool:
        last = self._last_broker_ok
        return last is not None and time.monotonic() - last > self.broker_silence_s

    def _broker_ok(self) -> None:
        """Record a successful Kafka round trip (for readiness)."""
        was_unreachable = self._broker_unreachable()
        self._last_broker_ok = time.monotonic()
        if was_unreachable:
            log.info("%s: the broker answers again", self.worker_id)
            self.metrics.set_ready(self.ready)

    def not_alive_reasons(self) -> list[str]:
        """Why the worker is not alive (empty while the loop runs and ticks)."""
        if not self._alive:
            return ["worker loop not running"]
        stalled = time.monotonic() - self._last_tick
        if stalled > STALL_AFTER_S:
            return [f"worker loop stalled for {stalled:.0f} s"]
        return []

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """Events partitions this worker owns now."""
        return frozenset(self._assigned)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` seconds until ready; returns whether it is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready:
                return True
            if self._stop.is_set() and not self._alive:
                return False
            time.sleep(0.05)
        return self.ready

    def stop(self) -> None:
        """Ask :meth:`run` to finish the batch in hand, commit and leave the group."""
        self._stop.set()

    # ------------------------------------------------------------ the Kafka loop

    def run(self, stop: threading.Event | None = None) -> int:
        """Consume until ``stop`` is set (or :meth:`stop` is called); returns an exit status."""
        from producers.kafka_client import make_consumer, make_producer
        from producers.topics import create_topics

        if stop is not None:
            self._stop = stop
        stop = self._stop
        settings = self.settings
        health: HealthServer | None = None
        producer: Any = None
        follower: CatalogFollower | None = None
        own_reader: StateReader | None = None
        self._alive = True
        self._tick()
        try:
            if settings.metrics.enabled:
                health = HealthServer(
                    settings.metrics.host,
                    settings.metrics.port,
                    render_metrics=self.metrics.exposition,
                    liveness=self.not_alive_reasons,
                    readiness=self.not_ready_reasons,
                ).start()
                self.metrics_port = health.port
            create_topics(settings)
            if self.state_source is None:
                # strict: a restore that cannot place its barrier fails and is retried,
                # rather than silently reading to end offsets that may fall short.
                own_reader = StateReader(settings, strict=True)
                self.state_source = own_reader
            # linger 0: a batch's records are sent whole, and lingering would only delay
            # their acknowledgement (kafka-python still batches what queues up meanwhile).
            producer = make_producer(
                settings,
                client_id=f"{settings.kafka.client_id}-{self.worker_id}",
                linger_ms=0,
                # room for a bounded record plus the batch's framing (consumers.bounded)
                max_request_size=max(1_048_576, settings.limits.max_publish_bytes + 65_536),
            )
            self._sink = KafkaSink(producer)
            follower = CatalogFollower(settings).start()
            while not follower.caught_up and not stop.is_set():
                self.apply_catalog_records(follower.poll(0.2))
                self._tick()
            self._catalog_caught_up = follower.caught_up
            self._update_gauges()
            if stop.is_set():
                return 0
            log.info("%s: catalog loaded (%d items)", self.worker_id, self.engine.catalog_size)
            consumer = make_consumer(
                settings,
                group_id=settings.consumer.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"{settings.kafka.client_id}-{self.worker_id}",
            )
            self._consumer = consumer
            self._last_broker_ok = time.monotonic()
            consumer.subscribe([settings.topics.events], listener=_Rebalance(self))
            while not stop.is_set():
                self._tick()
                left = self.batcher.time_left()
                if self._in_flight is not None:
                    # Records that arrive while the broker acknowledges the batch in flight
                    # are taken at once, not after the acknowledgement.
                    timeout_ms = 0 if self._sink_acknowledged() else IN_FLIGHT_POLL_MS
                else:
                    timeout_ms = 100 if left is None else max(0, int(left * 1000))
                room = max(1, self.batcher.room)
                self._take(consumer.poll(timeout_ms=timeout_ms, max_records=room), room)
                if self._restoring:
                    # Paused partitions: none of their events is in hand yet.
                    self.restore_pending()
                if self.batcher.due():
                    self._flush_and_commit()
                elif self._in_flight is not None and self._sink_acknowledged():
                    self._complete_in_flight()  # acknowledged: commit now
                if not len(self.batcher):  # between batches
                    self.apply_catalog_records(follower.poll(0))
                    self._housekeeping()
            self._flush_and_commit()
            self._complete_in_flight(sync=True)
            log.info("%s: stopping", self.worker_id)
            return 0
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt | SystemExit):
                log.exception("%s: the worker loop ended on an error", self.worker_id)
                self._write_crash_report(exc)
            raise
        finally:
            self._alive = False
            if self._consumer is not None:
                try:
                    self._consumer.close(autocommit=False)  # leaves the group
                except Exception:
                    log.exception("closing the events consumer failed")
                self._consumer = None
            for closing in (follower, own_reader):
                if closing is not None:
                    try:
                        closing.close()
                    except Exception:
                        log.exception("closing %s failed", type(closing).__name__)
            if producer is not None:
                producer.close(timeout=10)
            if health is not None:
                health.stop()
            self._assigned.clear()
            self.metrics.set_ready(False)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()

    def _take(self, polled: dict[Any, list[Any]], asked: int | None = None) -> None:
        """Add polled consumer records to the micro-batch; fewer than ``asked`` means the
        consumer had no more buffered (an adaptive batch is then due)."""
        now = time.time()
        taken = 0
        for records in polled.values():
            taken += len(records)
            for record in records:
                self.batcher.add(InputRecord.from_consumer_record(record, now))
        if polled:
            self._broker_ok()
        if asked is not None and taken < asked:
            self.batcher.drained()

    def restore_pending(self) -> int:
        """Restore the users of partitions paused at assignment, then resume them.

        Runs on the worker thread; returns the users loaded. While the state is read the
        events consumer keeps polling (its other partitions' records join the batch in
        hand), so a long restore neither blocks heartbeats nor exceeds the poll interval.
        A partition revoked or re-assigned during the read is left to its next restore.
        On failure the partitions stay paused and the restore is retried after
        ``RESTORE_RETRY_S`` seconds.
        """
        if not self._restoring or time.monotonic() < self._next_restore_try:
            return 0
        if self.state_source is None:
            self._resume(list(self._restoring))
            self._restoring.clear()
            return 0
        epochs = dict(self._restoring)
        wanted = sorted(epochs)
        start = time.perf_counter()
        try:
            entries = self.state_source.read(wanted, keep_alive=self._keep_polling)
        except (StateRestoreError, KafkaError) as exc:
            self._next_restore_try = time.monotonic() + RESTORE_RETRY_S
            log.warning(
                "%s: restoring partitions %s failed (%s); retrying in %.0f s",
                self.worker_id,
                wanted,
                exc,
                RESTORE_RETRY_S,
            )
            return 0
        self._broker_ok()
        done = [p for p in wanted if self._restoring.get(p) == epochs[p]]
        chosen = set(done)
        loaded = self._import(e for e in entries.values() if e.partition in chosen)
        for partition in done:
            del self._restoring[partition]
        self._resume(done)
        seconds = time.perf_counter() - start
        self.metrics.state_restored(seconds=seconds, users=loaded)
        self._update_gauges()
        log.info(
            "%s restored %d users of partitions %s in %.3f s (%d state records, %d bytes)",
            self.worker_id,
            loaded,
            done,
            seconds,
            getattr(self.state_source, "last_read_records", -1),
            getattr(self.state_source, "last_read_bytes", -1),
        )
        return loaded

    def _resume(self, partitions: Iterable[int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = set(consumer.assignment())
        tps = [TopicPartition(self.settings.topics.events, p) for p in partitions]
        tps = [tp for tp in tps if tp in owned]
        if tps:
            consumer.resume(*tps)

    def _keep_polling(self) -> None:
        """Poll the events consumer now and then during a restore (no records of paused
        partitions come back; the others' join the batch in hand)."""
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or now < self._next_keep_alive:
            return
        self._next_keep_alive = now + RESTORE_KEEP_ALIVE_S
        self._tick()
        room = self.batcher.room
        if room > 0:
            self._take(consumer.poll(timeout_ms=0, max_records=room), room)

    def _flush_and_commit(self, *, from_listener: bool = False) -> None:
        """Process the batch in hand, finish the one in flight (acknowledged, committed),
        then send this one. From the rebalance listener this one is finished too."""
        batch = self.batcher.flush()
        if self._sink is None:
            return
        self._in_hand = {}
        for record in batch.records:
            self._in_hand.setdefault((record.topic, record.partition), record.offset)
        plan = self.process_records(batch.records) if batch.records else None
        if plan is not None:
            self.batcher.processed(len(batch.records), time.perf_counter() - plan.started)
        self._complete_in_flight(from_listener=from_listener)
        if plan is None:
            return
        self._send(plan, self._sink)
        self._in_flight = plan
        if from_listener:
            self._complete_in_flight(from_listener=True)

    def _sink_acknowledged(self) -> bool:
        """True when the sink has every answer for what it was sent (a sink that cannot
        tell, like :class:`MemorySink`, counts as acknowledged)."""
        acknowledged = getattr(self._sink, "acknowledged", None)
        return True if acknowledged is None else bool(acknowledged())

    def _complete_in_flight(self, *, from_listener: bool = False, sync: bool = False) -> None:
        """Wait for the in-flight batch's acknowledgements, then commit its offsets.

        The commit is asynchronous (its answer is read by a later poll) unless ``sync``:
        it no longer holds up the next poll by a round trip. Either way it is sent only
        after the batch's records are acknowledged."""
        plan, self._in_flight = self._in_flight, None
        if plan is None or self._sink is None:
            return
        self._acknowledged(plan, self._sink)  # raises PublishError: then nothing is committed
        if isinstance(self._sink, KafkaSink):
            self._broker_ok()  # the producer's records were acknowledged
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in plan.offsets.items()
        }
        consumer = self._consumer
        if consumer is None:
            return
        if from_listener or not sync:
            # Blocking consumer calls are refused on the consumer's IO thread, where the
            # listener runs; the async commit is queued before the group re-join.
            consumer.commit_async(offsets, callback=self._committed)
            return
        try:
            consumer.commit(offsets)
            self._broker_ok()
            self._in_hand = {}
            if self._crash_loop is not None:
                log.info("%s: committed past the crash loop (%s)", self.worker_id, self._crash_loop)
                self._crash_loop = None
        except KafkaError as exc:
            # The state is already published: the next owner re-reads these events and
            # skips them by offset, so nothing is applied twice.
            log.warning(
                "%s: offset commit failed (%s); events will be re-read", self.worker_id, exc
            )

    def _committed(self, offsets: Any, response: Any) -> None:
        """The answer to an asynchronous commit (read on the worker thread, in a poll)."""
        if isinstance(response, Exception):
            # The state is already published: the next owner re-reads these events and
            # skips them by offset, so nothing is applied twice.
            log.warning(
                "%s: offset commit failed (%s); events will be re-read", self.worker_id, response
            )
        else:
            self._broker_ok()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_eviction:
            self._next_eviction = now + self._eviction_interval()
            # An evicted user's state must be on the state topic: acknowledged first.
            self._complete_in_flight()
            self.evict_idle()
        if self._consumer is None:
            return
        # The lag refresh is also the broker probe when nothing else reached it lately.
        quiet = self._last_broker_ok is None or (
            now - self._last_broker_ok > self.broker_silence_s / 3
        )
        if now >= self._next_lag or (quiet and now >= self._next_probe):
            self._next_lag = now + LAG_REFRESH_S
            self._next_probe = now + self.broker_silence_s / 3
            self._refresh_lag()
            self.metrics.set_ready(self.ready)

    def _refresh_lag(self) -> None:
        consumer = self._consumer
        assigned = list(consumer.assignment())
        if not assigned:
            # Nothing to measure, but the broker is probed all the same (readiness).
            try:
                consumer.end_offsets(
                    [TopicPartition(self.settings.topics.events, 0)], timeout_ms=2000
                )
                self._broker_ok()
            except KafkaError as exc:
                log.debug("broker probe failed: %s", exc)
            return
        try:
            ends = consumer.end_offsets(assigned, timeout_ms=2000)
            self._broker_ok()
            lags = {}
            for tp in assigned:
                # the fetch high watermark backs up ListOffsets (see state_store.read_to_end)
                end = max(int(ends.get(tp, 0)), int(consumer.highwater(tp) or 0))
                lags[(tp.topic, tp.partition)] = end - int(consumer.position(tp, timeout_ms=2000))
        except KafkaError as exc:
            log.debug("lag refresh failed: %s", exc)
            return
        self.metrics.lag(lags)

    # rebalance callbacks: they run on the consumer's IO thread while the worker thread
    # waits inside poll(), so the Engine is never touched by two threads at once.

    def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == self.settings.topics.events}
        self.metrics.rebalance("revoked", len(mine))
        if not mine:
            return
        self._flush_and_commit(from_listener=True)
        self.release_partitions(mine)
        self._assigned -= mine
        for partition in mine:
            self._restoring.pop(partition, None)
        self.metrics.partitions_released((self.settings.topics.events, p) for p in mine)
        self._update_gauges()
        log.info("%s: partitions %s revoked", self.worker_id, sorted(mine))

    def _on_lost(self, lost: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in lost if tp.topic == self.settings.topics.events}
        self.metrics.rebalance("lost", len(mine))
        if not mine:
            return
        # Another worker owns them already: what is in hand will be read again there.
        dropped = self.batcher.drop_partitions({(self.settings.topics.events, p) for p in mine})
        self.release_partitions(mine)
        self._assigned -= mine
        for partition in mine:
            self._restoring.pop(partition, None)
        self.metrics.partitions_released((self.settings.topics.events, p) for p in mine)
        self._update_gauges()
        log.warning(
            "%s: partitions %s lost (%d records dropped)", self.worker_id, sorted(mine), dropped
        )

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.topics.events}
        self.metrics.rebalance("assigned", len(mine))
        new = mine - self._assigned
        if new:
            # No blocking read here (this is the IO thread that heartbeats): pause the new
            # partitions; the worker thread restores their users, then resumes them.
            self._assign_epoch += 1
            for partition in new:
                self._restoring[partition] = self._assign_epoch
            self._next_restore_try = 0.0
            if self._consumer is not None:
                events = self.settings.topics.events
                self._consumer.pause(*(TopicPartition(events, p) for p in sorted(new)))
        self._assigned |= mine
        self._update_gauges()
        log.info(
            "%s: partitions %s assigned (%s to restore)", self.worker_id, sorted(mine), sorted(new)
        )


def _merge_single_outcomes(engine: Any, events: list[Event]) -> Any:
    """Process ``events`` one by one; an event that raises is rejected as processing_error."""
    from interest_core.engine import BatchOutcome

    recommendations: dict[str, Any] = {}
    rejected: list[tuple[Event, Rejected]] = []
    changed: dict[str, None] = {}
    deleted: dict[str, None] = {}
    duplicates = 0
    last_stats: Any = None
    for event in events:
        try:
            outcome = engine.process([event], published_at=time.time())
        except Exception as exc:
            log.exception("event %s failed", event.event_id)
            rejected.append(
                (event, Rejected("processing_error", f"{type(exc).__name__}: {exc}"[:300]))
            )
            continue
        last_stats = outcome.stats
        duplicates += outcome.duplicates
        rejected.extend(outcome.rejected)
        for rec in outcome.recommendations:
            recommendations[rec.user_id] = rec  # one record per user per batch: the latest
        for user_id in outcome.changed_users:
            changed[user_id] = None
            deleted.pop(user_id, None)
        for user_id in outcome.deleted_users:
            deleted[user_id] = None
            changed.pop(user_id, None)
            recommendations.pop(user_id, None)
    return BatchOutcome(
        recommendations=list(recommendations.values()),
        rejected=rejected,
        changed_users=list(changed),
        deleted_users=list(deleted),
        duplicates=duplicates,
        stats=last_stats,
    )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker._on_assigned(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self.worker._on_lost(lost)


# --------------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest worker``."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="P",
        help="port of /metrics, /healthz, /readyz (default: metrics.port; 0 = a free port)",
    )
    parser.add_argument(
        "--worker-id",
        default=None,
        metavar="ID",
        help="name in logs and dead letters (default: host-pid)",
    )
    # Set by `interest fleet` for the worker it restarts.
    parser.add_argument(
        "--restarts",
        type=int,
        default=0,
        metavar="N",
        help="times this worker slot was restarted before (interest_worker_restarts_total)",
    )
    parser.add_argument(
        "--crash-loop",
        default=None,
        metavar="TEXT",
        help="the supervisor's crash-loop note; /readyz names it until a batch is committed",
    )
    parser.add_argument(
        "--crash-file",
        default=None,
        metavar="PATH",
        help="where to write a JSON crash report (offsets in hand, error) if the loop fails",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker until SIGTERM / SIGINT, then finish the batch, commit and leave."""
    if args.metrics_port is not None:
        settings = settings.replace(metrics={"port": args.metrics_port})
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the batch in hand and leaving the group", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker = Worker(settings, worker_id=args.worker_id)
    except Exception as exc:
        print(f"interest worker: cannot start: {exc}", file=sys.stderr)
        return 1
    worker.crash_file = getattr(args, "crash_file", None)
    worker.restarted(getattr(args, "restarts", 0), getattr(args, "crash_loop", None))
    print(
        f"interest worker {worker.worker_id}: group {settings.consumer.group_id},"
        f" events {settings.topics.events}, Kafka {settings.kafka.bootstrap_servers}",
        file=sys.stderr,
    )
    try:
        return worker.run(stop)
    except KafkaError as exc:
        print(f"interest worker: Kafka error: {exc}", file=sys.stderr)
        return 1
