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
``min(60, user_ttl_s / 4)`` seconds, at least 1); their ids (and partition) are
remembered and, when one of them has events in a later batch, its state is reloaded
from the state topic before the batch is processed.

The worker is the Kafka side only: the loop, the rebalance listener, health and the
command entry. The batch step is :mod:`consumers.step` (usable with no broker: the
pipeline tests drive it with :class:`consumers.testing.MemorySink`), the records and
the Kafka sink are :mod:`consumers.sinks`, the publish/commit pipeline (one batch in
flight, committed once acknowledged) is :mod:`consumers.pipeline`, and which users are
in memory for which partition is :mod:`consumers.residency`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError

from consumers.batching import InputRecord, MicroBatcher
from consumers.catalog_follower import CatalogFollower
from consumers.group_membership import close_group_consumer, group_poll_ms
from consumers.health import HealthServer
from consumers.latency import BatchLatency
from consumers.layer_swap import LayerSwap
from consumers.metrics import WorkerMetrics
from consumers.params_follower import ParamsFollower
from consumers.pipeline import PublishPipeline
from consumers.probes import WorkerProbes, crash_report, write_crash_report
from consumers.publisher import ProcessSink
from consumers.read_ahead import ConsumerSource, EventSource, ReaderSource, start_reader
from consumers.residency import Residency, StateSource
from consumers.runtime import CollectorPolicy, tune_interpreter
from consumers.sinks import KafkaSink, OutgoingRecord, PublishError, PublishPlan, Sink
from consumers.state_store import StateReader, signal_partitions
from consumers.step import BatchStep
from consumers.stop_signal import StoppedWhileStarting, StopSignals
from interest_core.encoder import CachedEncoder, Encoder, encoder_from_settings
from interest_core.settings import Settings
from producers.kafka_client import describe_kafka_error, is_unreachable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from interest_core.engine import Engine

__all__ = [
    "KafkaSink",
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
#: Milliseconds a poll waits with no batch in hand. kafka-python's group consumer can
#: spend a poll's whole timeout in its coordinator step while fetched records wait (a
#: bare group consumer at 500 events/s: records up to 113 ms old with 100 ms polls, at
#: most 50 ms with 10 ms; docs/RESULTS.md).
IDLE_POLL_MS = 10
#: Seconds between consumer-lag refreshes.
LAG_REFRESH_S = 5.0
#: Seconds between the loop's chores (the catalog, item-knowledge and model followers,
#: housekeeping), which run between batches: each follower poll costs milliseconds (a
#: fetch round, the interpreter lock handed to a client thread and back), and the events
#: that arrive meanwhile wait for them.
CHORES_INTERVAL_S = 0.05
#: The same while a flight of records is in the air (the worker is busy: the followers'
#: polls took a seventh of its thread at half the bench's rate, see docs/RESULTS.md).
BUSY_CHORES_INTERVAL_S = 0.5
#: Seconds between the events consumer's polls while a restore runs (keeps the member
#: within ``max_poll_interval_ms``).
RESTORE_KEEP_ALIVE_S = 0.5
#: The broker counts as unreachable after at least this many seconds without a round trip.
BROKER_SILENCE_MIN_S = 5.0


class Worker:
    """One worker: the Kafka loop (:meth:`run`) around the broker-free :class:`BatchStep`.

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
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = WorkerMetrics(registry)
        self.engine = engine if engine is not None else _engine_for(settings, encoder)
        self.batcher = MicroBatcher(
            settings.batch.max_events,
            settings.batch.max_wait_ms / 1000.0,
            adaptive=settings.batch.adaptive,
            # A batch of costly records (new texts on a CPU encoder) stays well within
            # the poll interval, whatever max_events allows for cheap ones.
            max_batch_s=settings.consumer.max_poll_interval_ms / 1000.0 / 5.0,
            fresh_wait_ms=settings.batch.fresh_wait_ms,
        )
        self.residency = Residency(
            settings,
            self.engine,
            self.metrics,
            state_source=state_source,
            on_change=self._update_gauges,
            name=self.worker_id,
        )
        self.step = BatchStep(
            settings,
            self.engine,
            self.metrics,
            self.residency,
            worker_id=self.worker_id,
            on_published=on_published,
            on_change=self._update_gauges,
        )
        self.layer = LayerSwap(
            self.engine, self.metrics, enabled=settings.adapter.enabled, name=self.worker_id
        )
        self.metrics_port: int | None = None
        self._catalog_caught_up = False
        # An engine without an outbox learns items alone: no fleet knowledge to follow.
        self._knowledge_caught_up = getattr(self.engine, "outbox", None) is None
        self.probes = WorkerProbes(
            max(settings.consumer.session_timeout_ms / 1000.0, BROKER_SILENCE_MIN_S)
        )
        self._sink: Sink | None = None
        self._consumer: Any = None
        self._source: EventSource | None = None  # where the loop takes its events
        self.subscribed = False  # set once run() has joined the events group; never reset
        self._stop = threading.Event()
        self._next_eviction = time.monotonic() + self.residency.eviction_interval()
        self._next_lag = 0.0
        self._next_keep_alive = 0.0
        self._next_probe = 0.0
        self._next_chores = 0.0
        # Sends each batch, commits it once acknowledged; keeps the batch in hand's offsets.
        self.pipeline = PublishPipeline(
            self.step, self.probes, broker_ok=self._broker_ok, name=self.worker_id
        )
        #: Where :meth:`run` writes a crash report (JSON) when it ends on an exception.
        self.crash_file: str | None = None
        #: The process's collector policy (``interest worker`` sets it): settled at start.
        self.collector: CollectorPolicy | None = None

    # ------------------------------------------------------------ the step, by hand

    @property
    def state_source(self) -> StateSource | None:
        """Where users' state is read back from (see :class:`Residency`)."""
        return self.residency.state_source

    @state_source.setter
    def state_source(self, source: StateSource | None) -> None:
        self.residency.state_source = source

    def apply_catalog_records(self, records: Sequence[InputRecord]) -> None:
        """Apply catalog records in order (see :meth:`BatchStep.apply_catalog`)."""
        self.step.apply_catalog(records)

    def process_records(self, records: Sequence[InputRecord]) -> PublishPlan:
        """One micro-batch through the step, no broker (see :meth:`BatchStep.process`)."""
        return self.step.process(records)

    def publish(self, plan: PublishPlan, sink: Sink) -> None:
        """Send ``plan``'s records and wait for them, in flights as the running worker
        does (see :mod:`consumers.pipeline`), with nothing to commit."""
        self.pipeline.send(plan, sink, None)
        self.pipeline.complete(sink, None)

    def handle(self, records: Sequence[InputRecord], sink: Sink) -> PublishPlan:
        """``process_records`` then ``publish``: one micro-batch end to end, minus the commit."""
        plan = self.process_records(records)
        self.publish(plan, sink)
        return plan

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Evict idle users, then the least recently active beyond ``state.max_users``
        (see :meth:`Residency.evict`); returns their ids."""
        return self.residency.evict(now)

    def restore_partitions(self, partitions: Iterable[int]) -> int:
        """Load the users of events ``partitions`` from the state topic; returns users loaded."""
        return self.residency.restore_partitions(partitions)

    def restore_pending(self) -> int:
        """Restore the users of partitions paused at assignment, then resume them.

        Runs on the worker thread; returns the users loaded. While the state is read the
        events consumer keeps polling (its other partitions' records join the batch in
        hand), so a long restore neither blocks heartbeats nor exceeds the poll interval.
        """
        return self.residency.restore_pending(
            resume=self._resume, keep_alive=self._keep_polling, on_read=self._broker_ok
        )

    def _update_gauges(self) -> None:
        self.metrics.holding(users=self.engine.users_held, catalog_items=self.engine.catalog_size)
        self.metrics.set_ready(not self.not_ready_reasons())

    # ------------------------------------------------------------ crash loops

    def restarted(self, restarts: int, crash_loop: str | None = None) -> None:
        """Told by the supervisor: this slot was restarted ``restarts`` times before, and
        (when given) the crash loop it is in, which ``/readyz`` then names."""
        self.metrics.restarted(restarts)
        self.probes.restarted(crash_loop)
        self.metrics.set_ready(self.ready)

    def crash_report(self, error: BaseException) -> dict[str, Any]:
        """What a supervisor needs to say where the worker died (see :func:`crash_report`)."""
        return crash_report(self.worker_id, self.pipeline.in_hand, error)

    # ------------------------------------------------------------ probes

    def not_ready_reasons(self) -> list[str]:
        """Why the worker is not ready (empty when ready)."""
        reasons = []
        if not self.probes.alive:
            reasons.append("worker loop not running")
        if not self._catalog_caught_up:
            reasons.append("catalog loading")
        if not self._knowledge_caught_up:
            reasons.append("item knowledge loading")
        if not self.residency.assigned:
            reasons.append("no events partitions assigned")
        if self.residency.restoring:
            reasons.append("restoring state")
        if self.probes.broker_unreachable():
            reasons.append("broker_unreachable")
        crash_loop = self.probes.crash_loop_reason()
        if crash_loop is not None:
            reasons.append(crash_loop)
        return reasons

    def _broker_ok(self) -> None:
        """Record a successful Kafka round trip (for readiness)."""
        if self.probes.broker_ok():
            log.info("%s: the broker answers again", self.worker_id)
            self.metrics.set_ready(self.ready)

    def not_alive_reasons(self) -> list[str]:
        """Why the worker is not alive (empty while its loop and publisher process run)."""
        gone = isinstance(self._sink, ProcessSink) and not self._sink.alive
        return self.probes.not_alive_reasons() + (["publisher process exited"] if gone else [])

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    @property
    def publisher_pid(self) -> int | None:
        """The process id of the producer's child process (None when in-process)."""
        return self._sink.pid if isinstance(self._sink, ProcessSink) else None

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """Events partitions this worker owns now."""
        return self.residency.assigned

    def wait_ready(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` seconds until ready; returns whether it is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready:
                return True
            if self._stop.is_set() and not self.probes.alive:
                return False
            time.sleep(0.05)
        return self.ready

    def stop(self) -> None:
        """Ask :meth:`run` to finish the batch in hand, commit and leave the group."""
        self._stop.set()

    # ------------------------------------------------------------ the Kafka loop

    def run(self, stop: threading.Event | None = None) -> int:
        """Consume until ``stop`` is set (or :meth:`stop` is called); returns an exit status."""
        if stop is not None:
            self._stop = stop
        stop = self._stop
        clients = _Clients()
        self.probes.alive = True
        self.probes.tick()
        try:
            self._start(clients)
            self._load_catalog(clients.follower, stop)
            if clients.models is not None:  # no item knowledge to follow: models alone
                self.layer.load(clients.models, stop, self.probes.tick)
            if not self._knowledge_caught_up and not stop.is_set():
                clients.knowledge = self._load_knowledge(stop)
            if stop.is_set():
                return 0
            if self.collector is not None:  # what was loaded is scanned now, not in a batch
                self.collector.settle()
            self._subscribe(clients)
            self._loop(clients, stop)
            self._flush_and_commit()
            self._complete_in_flight(sync=True)
            log.info("%s: stopping", self.worker_id)
            return 0
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt | SystemExit):
                if _told_in_one_line(exc):
                    # run() says it in one line with a hint; the traceback only at DEBUG
                    log.debug(
                        "%s: the worker loop ended on an error", self.worker_id, exc_info=True
                    )
                else:
                    log.exception("%s: the worker loop ended on an error", self.worker_id)
                if self.crash_file:
                    write_crash_report(self.crash_file, self.crash_report(exc))
            raise
        finally:
            self.probes.alive = False
            if self._consumer is not None:
                clients.consumer = self._consumer
                self._consumer = None
            clients.close()
            self.layer.close()
            self.residency.clear()
            self.metrics.set_ready(False)

    def _start(self, clients: _Clients) -> None:
        """Health server, topics, state reader, producer and catalog follower."""
        from producers.topics import create_topics

        settings = self.settings
        if settings.metrics.enabled:
            clients.health = HealthServer(
                settings.metrics.host,
                settings.metrics.port,
                render_metrics=self.metrics.exposition,
                liveness=self.not_alive_reasons,
                readiness=self.not_ready_reasons,
            ).start()
            self.metrics_port = clients.health.port
        create_topics(settings)
        if self.state_source is None:
            # strict: a restore that cannot place its barrier fails and is retried,
            # rather than silently reading to end offsets that may fall short.
            clients.reader = StateReader(settings, strict=True)
            self.state_source = clients.reader
        self._sink = _open_sink(settings, self.worker_id, clients)
        clients.follower = CatalogFollower(settings).start()
        if self._knowledge_caught_up:  # no SharedKnowledge: follow the models topic here
            clients.models = ParamsFollower(
                settings, [self.layer.spec()], hooks=self.metrics, barrier=False
            ).start()

    def _load_catalog(self, follower: Any, stop: threading.Event) -> None:
        """Apply the catalog topic up to its end before consuming any event."""
        while not follower.caught_up and not stop.is_set():
            self.apply_catalog_records(follower.poll(0.2))
            self.probes.tick()
        self._catalog_caught_up = follower.caught_up
        self._update_gauges()
        if follower.caught_up:
            self.engine.prepare_texts()  # not in the first batch with a text
            log.info("%s: catalog loaded (%d items)", self.worker_id, self.engine.catalog_size)

    def _load_knowledge(self, stop: threading.Event) -> Any:
        """Follow interest.items and interest.models; returns once both have caught up
        (the fleet's item knowledge, fusion weights and adaptation layer are in use)."""
        from consumers.knowledge_follower import SharedKnowledge
        from interest_core.engine import FEATURES

        knowledge = SharedKnowledge(
            self.settings, self.engine, self.metrics, features=FEATURES, layer=self.layer
        ).start()
        while not knowledge.caught_up and not stop.is_set():
            knowledge.poll(0.2)
            self.probes.tick()
        if not stop.is_set():  # the fleet's layer in use before the first event
            self.layer.load(knowledge.models, stop, self.probes.tick)
        self._knowledge_caught_up = knowledge.caught_up
        self._update_gauges()
        log.info("%s: item knowledge loaded (%d items)", self.worker_id, len(self.engine.item_view))
        return knowledge

    def _subscribe(self, clients: _Clients) -> None:
        """Join the events consumer group (partitions arrive through :class:`_Rebalance`)."""
        from producers.kafka_client import make_consumer

        settings = self.settings
        consumer = make_consumer(
            settings,
            group_id=settings.consumer.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{settings.kafka.client_id}-{self.worker_id}",
        )
        self._consumer = consumer
        self._source = _open_source(self, consumer, clients)
        self.subscribed = True
        self.probes.last_broker_ok = time.monotonic()
        self.step.signal_partitions = signal_partitions(consumer, settings)
        consumer.subscribe([settings.topics.events], listener=_Rebalance(self))

    def _loop(self, clients: _Clients, stop: threading.Event) -> None:
        """Poll, restore, process, publish and commit until ``stop`` is set."""
        consumer, follower = self._consumer, clients.follower
        if self._source is None:
            self._source = ConsumerSource(consumer, self.settings.topics.events)
        while not stop.is_set():
            self.probes.tick()
            left = self.batcher.time_left()
            if self.pipeline.in_flight is not None:
                # Records that arrive while the broker acknowledges the batch in flight
                # are taken at once, not after the acknowledgement.
                timeout_ms = 0 if self.pipeline.acknowledged(self._sink) else IN_FLIGHT_POLL_MS
            elif left is not None:
                timeout_ms = max(0, int(left * 1000))
            else:
                timeout_ms = group_poll_ms(consumer, IDLE_POLL_MS)  # longer while joining
            self._take(timeout_ms, max(1, self.batcher.room))
            wait_ms = self.batcher.second_look()
            if wait_ms is not None:
                self._take(wait_ms, self.batcher.room)
            if self.residency.restoring:
                # Paused partitions: none of their events is in hand yet.
                self.restore_pending()
            if self.batcher.due():
                self._flush_and_commit()
            elif self.pipeline.in_flight is not None and self.pipeline.acknowledged(self._sink):
                self.pipeline.advance(self._sink, self._consumer)  # land it: publish, commit
            now = time.monotonic()
            if not len(self.batcher) and now >= self._next_chores:  # between batches
                busy = self.pipeline.in_flight is not None
                self._next_chores = now + (BUSY_CHORES_INTERVAL_S if busy else CHORES_INTERVAL_S)
                self.apply_catalog_records(follower.poll(0))
                if clients.models is not None:
                    self.layer.follow(clients.models)
                if clients.knowledge is not None:  # the layer's versions ride on it
                    clients.knowledge.poll(0)
                self._housekeeping()

    def _take(self, timeout_ms: int, room: int) -> None:
        """Add up to ``room`` records to the micro-batch, waiting up to ``timeout_ms``;
        a source with no more buffered makes an adaptive batch due."""
        assert self._source is not None
        taken, drained = self._source.poll(timeout_ms, room)
        self.batcher.extend(taken)
        if taken:
            self._broker_ok()
        if drained:
            self.batcher.drained()

    def _resume(self, partitions: Iterable[int]) -> None:
        if self._source is not None:
            self._source.resume(list(partitions))

    def _keep_polling(self) -> None:
        """Poll the events consumer now and then during a restore (no records of paused
        partitions come back; the others' join the batch in hand)."""
        now = time.monotonic()
        if self._source is None or now < self._next_keep_alive:
            return
        self._next_keep_alive = now + RESTORE_KEEP_ALIVE_S
        self.probes.tick()
        if self.batcher.room > 0:
            self._take(0, self.batcher.room)

    def _flush_and_commit(self, *, from_listener: bool = False) -> None:
        """Process the batch in hand, finish the one in flight (acknowledged, committed),
        then send this one. From the rebalance listener this one is finished too."""
        batch = self.batcher.flush()
        if self._sink is None:
            return
        self.pipeline.hold(batch.records)
        plan = self.process_records(batch.records) if batch.records else None
        if plan is not None:
            self.batcher.processed(len(batch.records), time.perf_counter() - plan.started)
        self.pipeline.send(plan, self._sink, self._consumer, from_listener=from_listener)

    def _complete_in_flight(self, *, from_listener: bool = False, sync: bool = False) -> None:
        """Finish the batch in flight (see :meth:`PublishPipeline.complete`)."""
        self.pipeline.complete(self._sink, self._consumer, from_listener=from_listener, sync=sync)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_eviction:
            self._next_eviction = now + self.residency.eviction_interval()
            # An evicted user's state must be on the state topic: acknowledged first.
            self._complete_in_flight()
            self.evict_idle()
        if self._consumer is None:
            return
        # The lag refresh is also the broker probe when nothing else reached it lately.
        last_ok, silence_s = self.probes.last_broker_ok, self.probes.broker_silence_s
        quiet = last_ok is None or (now - last_ok > silence_s / 3)
        if now >= self._next_lag or (quiet and now >= self._next_probe):
            self._next_lag = now + LAG_REFRESH_S
            self._next_probe = now + silence_s / 3
            self._refresh_lag()
            self.metrics.set_ready(self.ready)

    def _refresh_lag(self) -> None:
        reached, lags = _measure_lag(self._consumer, self.settings.topics.events, self._source)
        if reached:
            self._broker_ok()
        if lags is not None:
            self.metrics.lag(lags)


class _Clients:
    """What :meth:`Worker.run` opens, to be closed when it ends."""

    def __init__(self) -> None:
        self.health: HealthServer | None = None
        self.producer: Any = None
        self.publisher: ProcessSink | None = None  # the producer in a child process
        self.consumer: Any = None
        self.follower: CatalogFollower | None = None
        self.models: ParamsFollower | None = None  # only without clients.knowledge
        self.knowledge: Any = None  # consumers.knowledge_follower.SharedKnowledge
        self.reader: StateReader | None = None
        self.source: ReaderSource | None = None  # the events' reader process

    def close(self) -> None:
        """Leave the group and close every client (each failure logged, none raised)."""
        if self.consumer is not None:
            try:
                # Leaves the group (except where that would wedge the embedded
                # broker's group: see consumers.group_membership).
                close_group_consumer(self.consumer)
            except Exception:
                log.exception("closing the events consumer failed")
            self.consumer = None
        for closing in (self.source, self.follower, self.models, self.knowledge, self.reader):
            if closing is not None:
                try:
                    closing.close()
                except Exception:
                    log.exception("closing %s failed", type(closing).__name__)
        if self.producer is not None:
            self.producer.close(timeout=10)
        if self.publisher is not None:
            self.publisher.close(timeout=10)
        if self.health is not None:
            self.health.stop()


def _open_sink(settings: Settings, worker_id: str, clients: _Clients) -> Sink:
    """The worker's producer, in a child process (``runtime.publisher_process``) or in
    this one; kept on ``clients`` to be closed with them."""
    from producers.kafka_client import make_producer

    # linger 0: a batch's records are sent whole, and lingering would only delay
    # their acknowledgement (kafka-python still batches what queues up meanwhile).
    producer: dict[str, Any] = {
        "client_id": f"{settings.kafka.client_id}-{worker_id}",
        "linger_ms": 0,
        # room for a bounded record plus the batch's framing (consumers.bounded)
        "max_request_size": max(1_048_576, settings.limits.max_publish_bytes + 65_536),
    }
    if settings.runtime.publisher_process:
        clients.publisher = ProcessSink(settings, name=f"{worker_id}-publisher", **producer)
        return clients.publisher
    clients.producer = make_producer(settings, **producer)
    return KafkaSink(clients.producer)


def _open_source(worker: Worker, consumer: Any, clients: _Clients) -> EventSource:
    """Where the loop takes its events: a reader process (``[consumer] read_ahead``) or
    the group consumer itself."""
    settings, residency, name = worker.settings, worker.residency, worker.worker_id
    topic = settings.topics.events
    if not settings.consumer.read_ahead:
        return ConsumerSource(consumer, topic)
    client_id = f"{settings.kafka.client_id}-{name}-reader"
    conn, process = start_reader(settings, client_id=client_id, name=f"reader-{name}")
    clients.source = ReaderSource(
        consumer,
        topic,
        conn,
        process,
        readable=lambda: residency.assigned - residency.restoring,
        on_dropped=worker.metrics.read_ahead_dropped.inc,
    )
    return clients.source


def _measure_lag(
    consumer: Any, events_topic: str, source: EventSource | None = None
) -> tuple[bool, dict[tuple[str, int], int] | None]:
    """``(reached, lags)``: whether the broker answered, and the records between the
    consumer's position (or the ``source``'s, where it reads a partition itself) and the
    end of each assigned partition (None when unmeasured). With nothing assigned the
    broker is probed all the same (readiness)."""
    assigned = list(consumer.assignment())
    if not assigned:
        try:
            consumer.end_offsets([TopicPartition(events_topic, 0)], timeout_ms=2000)
            return True, None
        except KafkaError as exc:
            log.debug("broker probe failed: %s", exc)
            return False, None
    try:
        ends = consumer.end_offsets(assigned, timeout_ms=2000)
    except KafkaError as exc:
        log.debug("lag refresh failed: %s", exc)
        return False, None
    positions = source.positions() if source is not None else {}
    highwaters = source.highwaters() if source is not None else {}
    try:
        lags = {}
        for tp in assigned:
            # the fetch high watermark backs up ListOffsets (see state_store.read_to_end)
            seen = highwaters.get(tp.partition, 0) if tp.topic == events_topic else 0
            end = max(int(ends.get(tp, 0)), int(consumer.highwater(tp) or 0), seen)
            read = positions.get(tp.partition) if tp.topic == events_topic else None
            if read is None:
                read = int(consumer.position(tp, timeout_ms=2000))
            lags[(tp.topic, tp.partition)] = end - read
    except KafkaError as exc:
        log.debug("lag refresh failed: %s", exc)
        return True, None
    return True, lags


def _engine_for(settings: Settings, encoder: Encoder | None) -> Engine:
    """The engine a worker runs: the settings' encoder (or ``encoder``) behind an
    embedding cache."""
    from interest_core.engine import Engine

    if encoder is None:
        encoder = encoder_from_settings(settings.encoder)
    elif not isinstance(encoder, CachedEncoder):
        # The batch's repeated texts and the cache metrics need the LRU in front.
        encoder = CachedEncoder(encoder, settings.encoder.cache_size)
    return Engine(encoder, settings, emit_item_signals=settings.items.shared)


class _Rebalance(ConsumerRebalanceListener):
    """The worker's partition changes. The callbacks run on the consumer's IO thread
    while the worker thread waits inside ``poll()``, so the engine is never touched by
    two threads at once; nothing here may block on the broker (it heartbeats)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        """Finish the batch in hand (published, committed), then let the users go."""
        worker = self.worker
        mine = self._events_partitions(revoked, "revoked")
        if mine:
            worker._flush_and_commit(from_listener=True)
            self._give_up(mine)
            log.info("%s: partitions %s revoked", worker.worker_id, sorted(mine))

    def on_partitions_lost(self, lost: Any) -> None:
        """Another worker owns them already: what is in hand will be read again there."""
        worker = self.worker
        mine = self._events_partitions(lost, "lost")
        if mine:
            events = worker.settings.topics.events
            dropped = worker.batcher.drop_partitions({(events, p) for p in mine})
            self._give_up(mine)
            log.warning(
                "%s: partitions %s lost (%d records dropped)",
                worker.worker_id,
                sorted(mine),
                dropped,
            )

    def on_partitions_assigned(self, assigned: Any) -> None:
        """Pause the new partitions; the worker thread restores their users, then
        resumes them (no blocking read here)."""
        worker = self.worker
        mine = self._events_partitions(assigned, "assigned")
        new = worker.residency.assign(mine)
        if worker._source is not None:
            worker._source.assigned(mine, new)
        worker._update_gauges()
        log.info("%s: partitions %s assigned (%s to restore)", worker.worker_id, sorted(mine), new)

    def _events_partitions(self, partitions: Iterable[TopicPartition], kind: str) -> set[int]:
        """The events-topic partitions among ``partitions``, counted as a ``kind`` rebalance."""
        events = self.worker.settings.topics.events
        mine = {tp.partition for tp in partitions if tp.topic == events}
        self.worker.metrics.rebalance(kind, len(mine))
        return mine

    def _give_up(self, partitions: set[int]) -> None:
        """Revoked or lost: their users leave memory, their lag series go."""
        worker = self.worker
        if worker._source is not None:
            worker._source.released(partitions)
        worker.residency.release(partitions)
        worker.metrics.partitions_released((worker.settings.topics.events, p) for p in partitions)
        worker._update_gauges()


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


def _told_in_one_line(exc: BaseException) -> bool:
    """Errors that :func:`run` reports as one clear line: unreachable Kafka, a taken port."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    return isinstance(exc, KafkaError) and is_unreachable(exc)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker until SIGTERM / SIGINT, then finish the batch, commit and leave."""
    if args.metrics_port is not None:
        settings = settings.replace(metrics={"port": args.metrics_port})
    stop = threading.Event()

    worker: Worker | None = None
    # Still connecting (a client bootstrap can block for minutes) until the events
    # consumer exists: nothing is in hand or to commit, so a stop ends it at once. Once
    # subscribed, a stop (a second one during the shutdown included) only sets `stop`.
    signals = StopSignals(stop, starting=lambda: worker is None or not worker.subscribed).install()
    try:
        worker = Worker(settings, worker_id=args.worker_id)
    except StoppedWhileStarting as stopped:
        signals.caught()
        print(
            f"interest worker: stopped by signal {stopped.args[0]} while starting", file=sys.stderr
        )
        return 0
    except Exception as exc:
        print(f"interest worker: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        # Inside the try: a signal can land while the banner is being written.
        worker.crash_file = getattr(args, "crash_file", None)
        worker.restarted(getattr(args, "restarts", 0), getattr(args, "crash_loop", None))
        print(
            f"interest worker {worker.worker_id}: group {settings.consumer.group_id},"
            f" events {settings.topics.events}, Kafka {settings.kafka.bootstrap_servers}",
            file=sys.stderr,
        )
        worker.collector = tune_interpreter(settings.runtime)  # the process is the worker's
        return worker.run(stop)
    except StoppedWhileStarting as stopped:
        signals.caught()
        print(
            f"interest worker: stopped by signal {stopped.args[0]} while starting", file=sys.stderr
        )
        return 0
    except KafkaError as exc:
        print(f"interest worker: {describe_kafka_error(settings, exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"interest worker: cannot serve metrics on {settings.metrics.host}:"
            f"{settings.metrics.port}: the port is taken; choose another with --metrics-port"
            " or INTEREST__METRICS__PORT (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
