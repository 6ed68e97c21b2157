"""``interest aggregate``: the item-keyed stage, one member of its own consumer group.

The loop::

    poll interest.item-signals (keyed by item) ─► parse at the edge, refuse bad records
        ─► KnowledgeFold.apply (exactly once per source event, per-item watermarks)
        ─► every flush_interval_ms (or max_pending_items changed items):
           publish the changed items to interest.items (compacted), deleted items as
           tombstones, the fusion weights to interest.models, flush the producer
        ─► ONLY THEN commit the input offsets

On assignment of signals partitions the aggregator pauses them, restores their items
from ``interest.items`` (the last published record of every item whose key maps to
those partitions, read past a barrier marker) and, for the partition of the fusion key,
the fusion learner from ``interest.models``; then it resumes them. Signals it had
already folded and published before a crash are skipped by the watermarks inside the
restored records, so the knowledge is the same as if it had never crashed. On
revocation it publishes and commits what it holds, then drops those items.

It follows the catalog (as workers do) to apply deletions: a deleted item's record
becomes a tombstone and the item leaves every neighbour list this aggregator owns.

``apply_records`` / ``flush_plan`` are the broker-free step (tests and the offline
evaluation drive the same fold).
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
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.barrier import is_barrier, passed_barrier, place_barriers
from consumers.batching import InputRecord
from consumers.catalog_follower import CatalogFollower
from consumers.group_membership import group_poll_ms
from consumers.health import HealthServer
from consumers.metrics import AggregatorMetrics
from consumers.runtime import tune_interpreter
from consumers.state_store import (
    item_partition,
    partition_for_key,
    read_to_end,
    signal_partitions,
)
from consumers.worker import KafkaSink, OutgoingRecord, Sink
from interest_core.item_knowledge import ItemRecord, KnowledgeFold, parse_item_knowledge
from interest_core.item_signals import FUSION_KEY, SignalRecord, parse_signal_records
from interest_core.params import ParamRecord, ParamTable
from interest_core.records import CatalogDeletion, Rejected, parse_catalog
from interest_core.settings import Settings
from interest_core.shared_fusion import FUSION_PARAM, SharedFusion, fusion_spec

__all__ = ["ItemAggregator", "configure", "read_latest", "run"]

log = logging.getLogger(__name__)

#: Seconds between consumer-lag refreshes.
LAG_REFRESH_S = 5.0


def fold_for(settings: Settings) -> KnowledgeFold:
    """The fold with the settings' bounds and half-lives (workers must use the same)."""
    return KnowledgeFold(
        max_neighbours=settings.items.max_neighbours,
        trending_half_life_s=settings.recommend.trending_half_life_s,
        popularity_half_life_s=settings.model.long_term_half_life_s,
    )


def read_latest(
    consumer: Any,
    producer: Any,
    topic: str,
    partitions: Sequence[int],
    *,
    timeout_s: float,
    keep_alive: Any = None,
) -> dict[bytes, bytes | None]:
    """Latest value per key of ``partitions`` of the compacted ``topic``, read from the
    beginning past a barrier marker written at the start (everything acknowledged before
    is seen; see :mod:`consumers.barrier`). Raises ``TimeoutError`` after ``timeout_s``."""
    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return {}
    markers: dict[TopicPartition, int] | None = None
    if producer is not None:
        try:
            offsets = place_barriers(producer, topic, partitions, timeout_s)
            markers = {tp: offsets[tp.partition] for tp in tps}
        except KafkaError as exc:
            log.warning("no barrier on %s (%s): reading to the end offsets", topic, exc)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end: dict[TopicPartition, int] = {}
    if markers is None:
        end = {tp: int(o) for tp, o in consumer.end_offsets(tps).items()}
        pending = {tp for tp in tps if end.get(tp, 0) > 0}
    else:
        pending = set(tps)
    latest: dict[bytes, bytes | None] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} {sorted(tp.partition for tp in pending)} not read in time")
        for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
            for record in records:
                if record.key is None or is_barrier(record.key):
                    continue
                latest[bytes(record.key)] = None if record.value is None else bytes(record.value)
        for tp in list(pending):
            done = (
                passed_barrier(consumer, tp, markers[tp])
                if markers is not None
                else read_to_end(consumer, tp, end[tp])
            )
            if done:
                pending.discard(tp)
        if keep_alive is not None:
            keep_alive()
    consumer.assign([])
    return latest


class ItemAggregator:
    """One item aggregator: the Kafka loop (:meth:`run`) around a broker-free fold.

    ``features`` and ``initial_fusion`` describe the fusion weights it learns when it
    owns the fusion key's partition (default: the engine's).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        aggregator_id: str | None = None,
        registry: Any = None,
        features: Sequence[str] | None = None,
        initial_fusion: Sequence[float] | None = None,
    ) -> None:
        if features is None:
            from interest_core.engine import FEATURES, INITIAL_FUSION

            features, initial_fusion = FEATURES, INITIAL_FUSION
        self.settings = settings
        self.aggregator_id = aggregator_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = AggregatorMetrics(registry)
        self.fold = fold_for(settings)
        self.features = tuple(features)
        self.initial_fusion = None if initial_fusion is None else tuple(initial_fusion)
        self.fusion: SharedFusion | None = None
        self.offsets: dict[tuple[str, int], int] = {}  # next offset to commit, after a flush
        self.signal_partitions = settings.topics.item_signals_partitions
        self.metrics_port: int | None = None
        self._assigned: set[int] = set()
        self._restoring: set[int] = set()
        self._catalog_caught_up = False
        self._alive = False
        self._consumer: Any = None
        self._producer: Any = None
        self._sink: Sink | None = None
        self._last_flush = time.monotonic()
        self._next_lag = 0.0

    # ------------------------------------------------------------ broker-free step

    @property
    def fusion_partition(self) -> int:
        """The signals partition that carries the fusion feedback."""
        return partition_for_key(FUSION_KEY.encode(), self.signal_partitions)

    def new_fusion(self) -> SharedFusion:
        """A fusion learner at its neutral start (the engine's initial weights)."""
        return SharedFusion(
            self.features,
            learning_rate=self.settings.recommend.fusion_learning_rate,
            initial=self.initial_fusion,
        )

    def apply_records(self, records: Sequence[InputRecord]) -> int:
        """Fold signals records in order; refused records are counted and logged, never
        fatal. Returns the signals applied."""
        fold = self.fold
        applied0, dup0, del0 = fold.applied, fold.duplicates, fold.ignored_deleted
        lessons = 0
        for record in records:
            self.offsets[(record.topic, record.partition)] = record.offset + 1
            if is_barrier(record.key):
                continue
            for parsed in parse_signal_records(
                record.key, record.value, fusion_width=len(self.features)
            ):
                if isinstance(parsed, SignalRecord):
                    parsed = self._owned(parsed, record.partition)
                if isinstance(parsed, Rejected):
                    self.metrics.signal_rejected(parsed.reason)
                    log.warning(
                        "signals at %s refused: %s (%s)",
                        record.source,
                        parsed.reason,
                        parsed.detail,
                    )
                    continue
                if parsed.fusion:
                    if self.fusion is None:
                        self.fusion = self.new_fusion()
                    lessons += sum(1 for lesson in parsed.fusion if self.fusion.apply(lesson))
                for signal_ in parsed.signals:
                    fold.apply(signal_)
        self.metrics.signals_folded(
            applied=fold.applied - applied0,
            duplicates=fold.duplicates - dup0,
            deleted=fold.ignored_deleted - del0,
        )
        self.metrics.fusion(lessons, None)
        return fold.applied - applied0

    def _owned(self, parsed: SignalRecord, partition: int) -> SignalRecord | Rejected:
        """``parsed`` when its item's key maps to ``partition`` (where it was read), else
        refused as ``wrong_partition``: an item is folded, restored and published by the
        owner of its partition only (a worker configured with another
        ``topics.item_signals_partitions`` would split an item's knowledge)."""
        if (
            parsed.item_id is None
            or item_partition(parsed.item_id, self.signal_partitions) == partition
        ):
            return parsed
        return Rejected(
            "wrong_partition",
            f"item {parsed.item_id!r} maps to another of {self.signal_partitions} partitions",
        )

    def apply_catalog_records(self, records: Iterable[InputRecord]) -> None:
        """Apply the catalog's deletions (and re-listings) to the fold."""
        for record in records:
            if is_barrier(record.key):
                continue
            parsed = parse_catalog(record.key, record.value)
            if isinstance(parsed, Rejected):
                continue  # the workers count and dead-letter catalog records
            if isinstance(parsed, CatalogDeletion):
                self.fold.delete_item(parsed.item_id)
            elif parsed.item_id in self.fold.deleted:
                self.fold.restore_item(parsed.item_id)

    def flush_plan(self, now: float | None = None) -> tuple[list[OutgoingRecord], list[float]]:
        """What to publish now: changed items, tombstones of deleted items, and the fusion
        weights when they changed; with the ingest times of the newest folded events."""
        topics = self.settings.topics
        changed, removed = self.fold.take_changed()
        out = [OutgoingRecord(topics.items, r.item_id.encode(), r.to_json()) for r in changed]
        out += [OutgoingRecord(topics.items, item_id.encode(), None) for item_id in removed]
        if self.fusion is not None and self.fusion.dirty:
            param = self.fusion.to_param(created_at=time.time() if now is None else now)
            out.append(OutgoingRecord(topics.models, param.name.encode(), param.to_json()))
            self.metrics.fusion(0, param.version)
        return out, [r.ingested_at for r in changed]

    def load_items(self, records: Iterable[ItemRecord]) -> int:
        """Take restored records (from ``interest.items``); returns how many."""
        n = 0
        for record in records:
            self.fold.load(record)
            n += 1
        self.metrics.holding(len(self.fold.items))
        return n

    def restore_fusion(self, record: ParamRecord | None) -> None:
        """Resume the fusion learner from its last published version (or start it)."""
        fusion = self.new_fusion()
        if record is not None and not fusion.restore(record):
            log.warning("published %s does not fit this learner: starting anew", FUSION_PARAM)
        self.fusion = fusion

    # ------------------------------------------------------------ probes

    def not_ready_reasons(self) -> list[str]:
        """Why the aggregator is not ready (empty when ready)."""
        reasons = []
        if not self._alive:
            reasons.append("aggregator loop not running")
        if not self._catalog_caught_up:
            reasons.append("catalog loading")
        if not self._assigned:
            reasons.append("no signals partitions assigned")
        if self._restoring:
            reasons.append("restoring items")
        return reasons

    def not_alive_reasons(self) -> list[str]:
        """Why the aggregator is not alive (empty while the loop runs)."""
        return [] if self._alive else ["aggregator loop not running"]

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    # ------------------------------------------------------------ the Kafka loop

    def run(self, stop: threading.Event) -> int:
        """Consume until ``stop`` is set; returns an exit status."""
        from producers.kafka_client import make_consumer, make_producer
        from producers.topics import create_topics

        settings = self.settings
        health: HealthServer | None = None
        follower: CatalogFollower | None = None
        reader: Any = None
        self._alive = True
        try:
            if settings.metrics.enabled:
                health = HealthServer(
                    settings.metrics.host,
                    settings.items.metrics_port,
                    render_metrics=self.metrics.exposition,
                    liveness=self.not_alive_reasons,
                    readiness=self.not_ready_reasons,
                ).start()
                self.metrics_port = health.port
            create_topics(settings)
            self._producer = make_producer(
                settings, client_id=f"{settings.kafka.client_id}-{self.aggregator_id}"
            )
            self._sink = KafkaSink(self._producer)
            follower = CatalogFollower(settings).start()
            while not follower.caught_up and not stop.is_set():
                self.apply_catalog_records(follower.poll(0.2))
            self._catalog_caught_up = follower.caught_up
            reader = make_consumer(
                settings,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"{settings.kafka.client_id}-{self.aggregator_id}-restore",
            )
            consumer = make_consumer(
                settings,
                group_id=settings.items.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"{settings.kafka.client_id}-{self.aggregator_id}",
                background=True,  # it flushes every items.flush_interval_ms anyway
            )
            self._consumer = consumer
            self.signal_partitions = signal_partitions(consumer, settings)
            consumer.subscribe([settings.topics.item_signals], listener=_Rebalance(self))
            interval = settings.items.flush_interval_ms / 1000.0
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=group_poll_ms(consumer, 100), max_records=5000)
                now = time.time()
                records = [
                    InputRecord.from_consumer_record(r, now) for rs in polled.values() for r in rs
                ]
                if records:
                    self.apply_records(records)
                if self._restoring:
                    self._restore_pending(reader)
                self.apply_catalog_records(follower.poll(0))
                due = time.monotonic() - self._last_flush >= interval
                if due or self.fold.pending >= settings.items.max_pending_items:
                    self._flush_and_commit()
                    self._housekeeping()
            self._flush_and_commit()
            return 0
        finally:
            self._shut_down(follower, reader, health)

    def _shut_down(
        self, follower: CatalogFollower | None, reader: Any, health: HealthServer | None
    ) -> None:
        """Mark the loop dead and close every client :meth:`run` opened (each that exists),
        logging a close that fails rather than raising."""
        self._alive = False
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.exception("closing the signals consumer failed")
            self._consumer = None
        for closing in (follower, reader):
            if closing is not None:
                try:
                    closing.close()
                except Exception:
                    log.exception("closing %s failed", type(closing).__name__)
        if self._producer is not None:
            self._producer.close(timeout=10)
        if health is not None:
            health.stop()
        self.metrics.set_ready(False)

    def _flush_and_commit(self, *, from_listener: bool = False) -> None:
        self._last_flush = time.monotonic()
        if self._sink is None:
            return
        start = time.perf_counter()
        out, ingested = self.flush_plan()
        for record in out:
            self._sink.send(record)
        self._sink.flush()
        self.metrics.flushed(
            seconds=time.perf_counter() - start,
            records=len(out),
            ingested_at=ingested,
            now=time.time(),
        )
        self.metrics.holding(len(self.fold.items))
        self.metrics.set_ready(self.ready)
        offsets, self.offsets = self.offsets, {}
        if not offsets or self._consumer is None:
            return
        commit = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
        }
        if from_listener:
            self._consumer.commit_async(commit)
            return
        try:
            self._consumer.commit(commit)
        except KafkaError as exc:
            # Published already: the next owner restores the records and their watermarks,
            # so re-read signals are skipped, never applied twice.
            log.warning("%s: offset commit failed (%s)", self.aggregator_id, exc)

    def _restore_pending(self, reader: Any) -> None:
        settings = self.settings
        wanted = set(self._restoring)
        start = time.perf_counter()
        items_count = len(reader.partitions_for_topic(settings.topics.items) or ())
        aligned = items_count == self.signal_partitions
        to_read = sorted(wanted) if aligned else list(range(items_count))
        keep_alive = self._keep_alive
        try:
            latest = read_latest(
                reader,
                self._producer,
                settings.topics.items,
                to_read,
                timeout_s=settings.state.restore_timeout_s,
                keep_alive=keep_alive,
            )
            fusion_record = None
            if self.fusion_partition in wanted:
                models = read_latest(
                    reader,
                    self._producer,
                    settings.topics.models,
                    sorted(reader.partitions_for_topic(settings.topics.models) or ()),
                    timeout_s=settings.state.restore_timeout_s,
                    keep_alive=keep_alive,
                )
                table = ParamTable([fusion_spec(self.features)])
                value = models.get(FUSION_PARAM.encode())
                if value is not None:
                    parsed = table.offer(FUSION_PARAM, value)
                    fusion_record = parsed if isinstance(parsed, ParamRecord) else None
        except (KafkaError, TimeoutError) as exc:
            log.warning("%s: restore failed (%s); retrying", self.aggregator_id, exc)
            return
        restored = []
        for key, value in latest.items():
            if value is None:
                continue
            if partition_for_key(key, self.signal_partitions) not in wanted:
                continue
            parsed_item = parse_item_knowledge(key, value)
            if isinstance(parsed_item, Rejected):
                log.warning("items record %r refused on restore: %s", key[:80], parsed_item.reason)
                continue
            restored.append(parsed_item)
        self.load_items(restored)
        if self.fusion_partition in wanted:
            self.restore_fusion(fusion_record)
        self._restoring -= wanted
        if self._consumer is not None:
            topic = settings.topics.item_signals
            self._consumer.resume(*(TopicPartition(topic, p) for p in sorted(wanted)))
        self.metrics.restored(time.perf_counter() - start)
        self.metrics.set_ready(self.ready)
        log.info(
            "%s: restored %d items of partitions %s%s",
            self.aggregator_id,
            len(restored),
            sorted(wanted),
            " and the fusion weights" if self.fusion_partition in wanted else "",
        )

    def _keep_alive(self) -> None:
        if self._consumer is not None:
            self._consumer.poll(timeout_ms=0)  # paused partitions: heartbeats only

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or self._consumer is None:
            return
        self._next_lag = now + LAG_REFRESH_S
        assigned = list(self._consumer.assignment())
        if not assigned:
            return
        try:
            ends = self._consumer.end_offsets(assigned)
        except KafkaError:
            return
        self.metrics.lag(
            {
                (tp.topic, tp.partition): int(ends.get(tp, 0)) - int(self._consumer.position(tp))
                for tp in assigned
            }
        )

    def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == self.settings.topics.item_signals}
        if not mine:
            return
        self._flush_and_commit(from_listener=True)
        self._release(mine)

    def _on_lost(self, lost: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in lost if tp.topic == self.settings.topics.item_signals}
        if mine:
            # Another member owns them: it restores what was published; the rest is re-read.
            self._release(mine)

    def _release(self, partitions: set[int]) -> None:
        gone = [
            item_id
            for item_id in self.fold.items
            if partition_for_key(item_id.encode(), self.signal_partitions) in partitions
        ]
        self.fold.unload(gone)
        if self.fusion_partition in partitions:
            self.fusion = None
        self._assigned -= partitions
        self._restoring -= partitions
        self.metrics.holding(len(self.fold.items))
        log.info("%s: signals partitions %s released", self.aggregator_id, sorted(partitions))

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.topics.item_signals}
        new = mine - self._assigned
        if new and self._consumer is not None:
            topic = self.settings.topics.item_signals
            self._consumer.pause(*(TopicPartition(topic, p) for p in sorted(new)))
            self._restoring |= new
        self._assigned |= mine
        self.metrics.set_ready(self.ready)
        log.info("%s: signals partitions %s assigned", self.aggregator_id, sorted(mine))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, aggregator: ItemAggregator) -> None:
        self.aggregator = aggregator

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.aggregator._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.aggregator._on_assigned(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self.aggregator._on_lost(lost)


# --------------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest aggregate``."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="P",
        help="port of /metrics, /healthz, /readyz (default: items.metrics_port; 0 = a free port)",
    )
    parser.add_argument(
        "--aggregator-id", default=None, metavar="ID", help="name in logs (default: host-pid)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one item aggregator until SIGTERM / SIGINT, then publish, commit and leave."""
    if args.metrics_port is not None:
        settings = settings.replace(items={"metrics_port": args.metrics_port})
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: publishing what is held and leaving the group", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    aggregator = ItemAggregator(settings, aggregator_id=args.aggregator_id)
    print(
        f"interest aggregate {aggregator.aggregator_id}: group {settings.items.group_id},"
        f" {settings.topics.item_signals} -> {settings.topics.items},"
        f" Kafka {settings.kafka.bootstrap_servers}",
        file=sys.stderr,
    )
    # Its heap (every item's neighbours) is a worker's size: the same collector policy.
    tune_interpreter(settings.runtime)  # this process is the aggregator's alone
    try:
        return aggregator.run(stop)
    except KafkaError as exc:
        print(f"interest aggregate: Kafka error: {exc}", file=sys.stderr)
        return 1
