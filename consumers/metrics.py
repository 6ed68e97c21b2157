"""Every Prometheus metric of a worker, in one class built on an injected registry.

Processing code calls the hook methods (``batch_done``, ``dead_lettered``,
``published``...) and never touches ``prometheus_client``: like Faust's
``PrometheusMonitor``, this module is the only one that knows metrics exist. Names and
labels follow the table in ``docs/ARCHITECTURE.md``; all times are seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from consumers.latency import STAGES, BatchLatency

__all__ = ["AggregatorMetrics", "ManyHistogram", "TrainerMetrics", "WorkerMetrics"]

log = logging.getLogger(__name__)

# Stage timings: from sub-millisecond (a cached lookup) to seconds (a big CPU encode).
_STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# End-to-end latency: milliseconds in a live system; replays of old logs land far right.
# Dense from 50 ms to 1 s, where a p99 and its alert thresholds lie: histogram_quantile
# interpolates linearly inside a bucket (with 0.1, 0.25 and 0.5 alone, the p99 read from
# lognormal latencies was up to 42 % above the true one; tests/unit/test_metrics.py).
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
    86400.0,
)
_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 512, 1024, 2048, 4096)
# Per-event stages of ingest -> publish: sub-millisecond to seconds.
_STAGE_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.35,
    0.5,
    1.0,
    5.0,
    60.0,
)


class ManyHistogram:
    """A Prometheus histogram fed many observations per call (one numpy pass).

    prometheus_client's ``Histogram.observe`` costs about 8 us per value, which per event
    is a real share of the worker's budget; a batch's latencies go in here at once. It
    registers itself on ``registry`` and is exposed like any histogram.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
        labelnames: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = np.array([*sorted(buckets), math.inf], dtype=np.float64)
        self._counts: dict[tuple[str, ...], np.ndarray] = {}
        self._sums: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float] | np.ndarray, *labels: str) -> None:
        """Observe every value (seconds, negatives count as 0) under ``labels``."""
        array = np.maximum(np.asarray(values, dtype=np.float64).ravel(), 0.0)
        if not array.size:
            return
        counts = np.bincount(
            np.searchsorted(self._bounds, array, side="left"), minlength=len(self._bounds)
        )
        with self._lock:
            held = self._counts.get(labels)
            self._counts[labels] = counts if held is None else held + counts
            self._sums[labels] = self._sums.get(labels, 0.0) + float(array.sum())

    def touch(self, *labels: str) -> None:
        """Expose the series of ``labels`` (at zero) before its first observation."""
        with self._lock:
            if labels not in self._counts:
                self._counts[labels] = np.zeros(len(self._bounds), dtype=np.int64)
                self._sums[labels] = 0.0

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        with self._lock:
            series = [(k, np.cumsum(v), self._sums[k]) for k, v in self._counts.items()]
        if not self.labelnames and not series:
            series = [((), np.zeros(len(self._bounds), dtype=np.int64), 0.0)]
        for labels, cumulative, total in series:
            family.add_metric(
                list(labels),
                [
                    (floatToGoString(b), int(c))
                    for b, c in zip(self._bounds, cumulative, strict=True)
                ],
                total,
            )
        yield family


class WorkerMetrics:
    """The worker's metrics on ``registry`` (one registry per worker; tests make their own).

    Every public method is a hook named for what happened; none raises on odd input.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._add_event_counters(r)
        self._add_stage_timers(r)
        self._add_publication(r)
        self._add_memory(r)
        self._add_health(r)

    def _add_event_counters(self, r: CollectorRegistry) -> None:
        """Records consumed, dead-lettered, skipped as replays, applied."""
        self.events_consumed = Counter(
            "interest_events_consumed_total",
            "Event records consumed, by event type ('invalid' for records that did not parse)",
            ["type"],
            registry=r,
        )
        self.events_deadlettered = Counter(
            "interest_events_deadlettered_total",
            "Event records sent to the dead-letter topic, by machine-readable reason",
            ["reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "interest_events_duplicate_total",
            "Events skipped because the user's state had already applied them (replays)",
            registry=r,
        )
        self.events_applied = Counter(
            "interest_events_applied_total",
            "Events applied to a user's state",
            registry=r,
        )

    def _add_stage_timers(self, r: CollectorRegistry) -> None:
        """Where a micro-batch spends its time, and the text cache."""
        self.batch_size = Histogram(
            "interest_batch_size",
            "Records per micro-batch (events)",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "interest_batch_seconds",
            "Time to process and publish one micro-batch, parse to producer flush",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.parse_seconds = Histogram(
            "interest_parse_seconds",
            "Time to parse and validate one micro-batch's records",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.encoder_seconds = Histogram(
            "interest_encoder_seconds",
            "Encoder time per micro-batch (one call for the batch's uncached texts)",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.texts_encoded = Counter(
            "interest_texts_encoded_total", "Distinct texts run through the encoder", registry=r
        )
        self.cache_hits = Counter(
            "interest_embedding_cache_hits_total", "Text embeddings found in the cache", registry=r
        )
        self.cache_misses = Counter(
            "interest_embedding_cache_misses_total",
            "Text embeddings not in the cache",
            registry=r,
        )
        self.update_seconds = Histogram(
            "interest_update_seconds",
            "Interest-state update time per micro-batch",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "interest_index_search_seconds",
            "Batched item-index search time per micro-batch",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.rank_seconds = Histogram(
            "interest_rank_seconds",
            "Fusion, diversity re-ranking and reasons per micro-batch",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.publish_seconds = Histogram(
            "interest_publish_seconds",
            "Worker time to send a micro-batch's records and wait for their acknowledgement"
            " (the wait overlapped by the next batch's processing is not counted)",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )

    def _add_publication(self, r: CollectorRegistry) -> None:
        """What is published, and the latency to publication."""
        self.recommendations_published = Counter(
            "interest_recommendations_published_total",
            "Recommendation records published",
            registry=r,
        )
        self.tombstones_published = Counter(
            "interest_tombstones_published_total",
            "Null-value records published for deleted users (state and recommendations)",
            registry=r,
        )
        self.event_to_publish = ManyHistogram(
            "interest_event_to_publish_seconds",
            "Event time to publication of the recommendation it triggered",
            _LATENCY_BUCKETS,
            r,
        )
        self.ingest_to_publish = ManyHistogram(
            "interest_ingest_to_publish_seconds",
            "Kafka record timestamp (else poll time) to publication",
            _LATENCY_BUCKETS,
            r,
        )
        self.latency_stage = ManyHistogram(
            "interest_latency_stage_seconds",
            "Per event, the stages of ingest to publication: kafka (record timestamp to "
            "poll), batch_wait (poll to processing), process, publish (to acknowledgement)",
            _STAGE_LATENCY_BUCKETS,
            r,
            ["stage"],
        )
        for stage in STAGES:
            self.latency_stage.touch(stage)

    def _add_memory(self, r: CollectorRegistry) -> None:
        """Partitions, users and catalog items held; state reads and writes."""
        self.consumer_lag = Gauge(
            "interest_consumer_lag_records",
            "Records between the consumer's position and the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.users_held = Gauge("interest_users_held", "Users whose state is in memory", registry=r)
        self.catalog_items = Gauge(
            "interest_catalog_items", "Items in the worker's catalog index", registry=r
        )
        self.catalog_records = Counter(
            "interest_catalog_records_total",
            "Catalog records applied, by outcome (upsert, delete, or a rejection reason)",
            ["outcome"],
            registry=r,
        )
        self.state_writes = Counter(
            "interest_state_writes_total",
            "Records written to the state topic (tombstones included)",
            registry=r,
        )
        self.state_restore_seconds = Histogram(
            "interest_state_restore_seconds",
            "Time to restore users' state from the state topic (per restore)",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.users_restored = Counter(
            "interest_users_restored_total", "Users loaded back from the state topic", registry=r
        )
        self.users_evicted = Counter(
            "interest_users_evicted_total",
            "Users dropped from memory after idling past the TTL (restorable)",
            registry=r,
        )
        self.users_released = Counter(
            "interest_users_released_total",
            "Users dropped from memory because their partition went to another worker",
            registry=r,
        )
        self.rebalances = Counter(
            "interest_rebalances_total",
            "Partition assignment changes seen by this worker, by kind",
            ["kind"],
            registry=r,
        )
        self.read_ahead_dropped = Counter(
            "interest_read_ahead_dropped_total",
            "Records the reader process read for partitions that changed hands or were "
            "paused before the worker took them (read again from the right offset)",
            registry=r,
        )

    def _add_health(self, r: CollectorRegistry) -> None:
        """Learned parameters, readiness, bounded publication, restarts."""
        self.model_records = Counter(
            "interest_model_records_total",
            "Records read from the models topic, by outcome (accepted, tombstone, or a "
            "rejection reason)",
            ["outcome"],
            registry=r,
        )
        self.param_version = Gauge(
            "interest_param_version",
            "Version of each learned parameter in use (-1: none, the built-in default)",
            ["name"],
            registry=r,
        )
        self.adapter_swap_seconds = Histogram(
            "interest_adapter_swap_seconds",
            "Pause between two batches to switch to a new adaptation-layer version (the "
            "catalog is projected off the batch path; rows changed meanwhile are redone)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.item_records = Counter(
            "interest_item_records_total",
            "Records read from the items topic, by outcome (applied, tombstone, stale_version, "
            "or a rejection reason)",
            ["outcome"],
            registry=r,
        )
        self.item_knowledge_latency = Histogram(
            "interest_item_knowledge_latency_seconds",
            "Event ingest (Kafka timestamp) to the item knowledge it changed being applied "
            "by this worker, through the item aggregation",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.item_knowledge_age = Gauge(
            "interest_item_knowledge_age_seconds",
            "Seconds since the newest event folded into the item knowledge this worker holds "
            "entered Kafka",
            registry=r,
        )
        self.item_knowledge_items = Gauge(
            "interest_item_knowledge_items",
            "Items whose shared knowledge (neighbours, counts) this worker holds",
            registry=r,
        )
        self.item_signals_published = Counter(
            "interest_item_signals_published_total",
            "Item signals published to the item-signals topic (one per item per event)",
            registry=r,
        )
        self.ready = Gauge(
            "interest_ready", "1 when the catalog is loaded and partitions are assigned", registry=r
        )
        self.records_trimmed = Counter(
            "interest_records_trimmed_total",
            "Published records cut to fit limits.max_publish_bytes, by kind"
            " (deadletter: truncated; state, recommendation: trimmed)",
            ["kind"],
            registry=r,
        )
        self.poison_records = Counter(
            "interest_poison_records_total",
            "Records skipped because not even a bounded dead letter (or state, or"
            " recommendation) could be published, by reason",
            ["reason"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "interest_worker_restarts_total",
            "Times this worker's slot was restarted after its process exited (set by the"
            " supervisor, `interest fleet`, at start)",
            registry=r,
        )
        # Series that exist from the start, so rate() and alerts see a zero, not nothing.
        self.worker_restarts.inc(0)

    # ------------------------------------------------------------------ hooks

    def records_consumed(self, event_types: Iterable[str]) -> None:
        """Count consumed records by event type ('invalid' for records that did not parse)."""
        counts: dict[str, int] = {}
        for event_type in event_types:
            counts[event_type] = counts.get(event_type, 0) + 1
        for event_type, n in counts.items():
            self.events_consumed.labels(type=event_type).inc(n)

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        """Count records sent to the dead-letter topic under ``reason``."""
        self.events_deadlettered.labels(reason=reason).inc(count)

    def batch_done(
        self,
        *,
        size: int,
        parse_s: float,
        encode_s: float = 0.0,
        update_s: float = 0.0,
        search_s: float = 0.0,
        rank_s: float = 0.0,
        texts_encoded: int = 0,
        cache_hits: int = 0,
        cache_misses: int = 0,
        events_applied: int = 0,
        duplicates: int = 0,
    ) -> None:
        """Record one processed micro-batch: ``size`` records, stage times in seconds."""
        self.batch_size.observe(size)
        self.parse_seconds.observe(parse_s)
        self.encoder_seconds.observe(encode_s)
        self.update_seconds.observe(update_s)
        self.search_seconds.observe(search_s)
        self.rank_seconds.observe(rank_s)
        self.texts_encoded.inc(texts_encoded)
        self.cache_hits.inc(cache_hits)
        self.cache_misses.inc(cache_misses)
        self.events_applied.inc(events_applied)
        self.events_duplicate.inc(duplicates)

    def published(
        self,
        *,
        publish_s: float,
        batch_s: float,
        recommendations: int,
        tombstones: int,
        state_writes: int,
        published_at: float,
        event_times: Sequence[float] | np.ndarray,
        ingest_times: Sequence[float] | np.ndarray,
        latency: BatchLatency | None = None,
    ) -> None:
        """Record a flushed publication; times are unix seconds, durations seconds.

        ``latency``, when given, adds its per-event stages (``interest_latency_stage_seconds``).
        """
        self.publish_seconds.observe(publish_s)
        self.batch_seconds.observe(batch_s)
        self.recommendations_published.inc(recommendations)
        self.tombstones_published.inc(tombstones)
        self.state_writes.inc(state_writes)
        events = np.asarray(event_times, dtype=np.float64)
        self.event_to_publish.observe_many(published_at - events)
        ingests = np.asarray(ingest_times, dtype=np.float64)
        self.ingest_to_publish.observe_many(published_at - ingests)
        if latency is not None:
            for stage, seconds in latency.stages().items():
                self.latency_stage.observe_many(seconds, stage)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set consumer lag (records) per ``(topic, partition)`` this worker owns."""
        for (topic, partition), records in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, records))

    def partitions_released(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of partitions this worker no longer owns."""
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):  # never set: nothing to remove
                self.consumer_lag.remove(topic, str(partition))

    def rebalance(self, kind: str, partitions: int) -> None:
        """Count an assignment change: ``kind`` is assigned, revoked or lost."""
        if partitions:
            self.rebalances.labels(kind=kind).inc()

    def holding(self, *, users: int, catalog_items: int) -> None:
        """Set the gauges of what is in memory: users and catalog items."""
        self.users_held.set(users)
        self.catalog_items.set(catalog_items)

    def catalog_applied(self, outcome: str, count: int = 1) -> None:
        """Count catalog records by outcome: upsert, delete, or a rejection reason."""
        if count:
            self.catalog_records.labels(outcome=outcome).inc(count)

    def state_restored(self, *, seconds: float, users: int) -> None:
        """Record one restore from the state topic: its duration and users loaded."""
        self.state_restore_seconds.observe(seconds)
        self.users_restored.inc(users)

    def evicted(self, count: int) -> None:
        """Count users dropped from memory for idling past the TTL."""
        self.users_evicted.inc(count)

    def released(self, count: int) -> None:
        """Count users dropped from memory because their partition was revoked or lost."""
        self.users_released.inc(count)

    def trimmed(self, kind: str) -> None:
        """Count a published record cut to fit the size limit (deadletter, state, recommendation)."""
        self.records_trimmed.labels(kind=kind).inc()

    def poisoned(self, reason: str) -> None:
        """Count a record skipped because nothing of it could be published."""
        self.poison_records.labels(reason=reason).inc()

    def restarted(self, restarts: int) -> None:
        """Record the restarts of this worker's slot before this process (from the supervisor)."""
        if restarts > 0:
            self.worker_restarts.inc(restarts)

    def model_record(self, outcome: str) -> None:
        """Count one models-topic record: accepted, tombstone, or a rejection reason."""
        self.model_records.labels(outcome=outcome).inc()

    def param_in_use(self, name: str, version: int | None) -> None:
        """Set the version of learned parameter ``name`` in use (None: the default)."""
        self.param_version.labels(name=name).set(-1 if version is None else version)

    def adapter_swapped(self, version: int, seconds: float) -> None:
        """A new adaptation-layer version is in use (``interest_param_version`` of
        ``adapter.matrix`` says which; 0 is the identity) after ``seconds`` of swap."""
        self.param_version.labels(name="adapter.matrix").set(version)
        self.adapter_swap_seconds.observe(seconds)

    def item_record(self, outcome: str, count: int = 1) -> None:
        """Count items-topic records by outcome: applied, tombstone, or why refused."""
        if count:
            self.item_records.labels(outcome=outcome).inc(count)

    def item_knowledge_applied(self, ingested_at: Iterable[float], now: float) -> None:
        """Observe event-to-knowledge latency for records whose newest folded event entered
        Kafka at ``ingested_at`` (unix seconds; 0 = unknown, skipped)."""
        for ts in ingested_at:
            if ts > 0:
                self.item_knowledge_latency.observe(max(0.0, now - ts))

    def item_knowledge_held(self, *, items: int, newest_ingested_at: float, now: float) -> None:
        """Set the item-knowledge gauges: items held and the age of the newest event."""
        self.item_knowledge_items.set(items)
        if newest_ingested_at > 0:
            self.item_knowledge_age.set(max(0.0, now - newest_ingested_at))

    def item_signals(self, count: int) -> None:
        """Count item signals published."""
        if count:
            self.item_signals_published.inc(count)

    def set_ready(self, ready: bool) -> None:
        """1 when the worker is ready (catalog caught up, partitions assigned), else 0."""
        self.ready.set(1 if ready else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TrainerMetrics:
    """The trainer role's metrics (``interest trainer``), on an injected registry.

    Hooks: :meth:`events_applied`, :meth:`published`, :meth:`set_ready`; the trainer's
    loop calls them, never ``prometheus_client``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.events = Counter(
            "interest_trainer_events_total",
            "Events applied to the trainer's replica of the user states",
            registry=r,
        )
        self.examples = Gauge(
            "interest_trainer_examples_total",
            "Training examples taken from the stream since start (state before a positive "
            "item event, and that item)",
            registry=r,
        )
        self.published_versions = Counter(
            "interest_trainer_versions_published_total",
            "Versions of the adaptation layer published to the models topic",
            registry=r,
        )
        self.round_seconds = Histogram(
            "interest_trainer_round_seconds",
            "Time of one training round (optimiser steps before a publication)",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.loss = Gauge(
            "interest_trainer_loss",
            "InfoNCE loss (nats) of the last optimiser step of the last round",
            registry=r,
        )
        self.examples_per_s = Gauge(
            "interest_trainer_examples_per_second",
            "Examples trained per second in the last round",
            registry=r,
        )
        self.param_version = Gauge(
            "interest_param_version",
            "Version of each learned parameter last published by this trainer",
            ["name"],
            registry=r,
        )
        self.ready = Gauge(
            "interest_ready", "1 when the catalog and models topic are caught up", registry=r
        )

    def events_applied(self, count: int, examples_total: int) -> None:
        """``count`` more events applied; ``examples_total`` examples taken so far."""
        self.events.inc(count)
        self.examples.set(examples_total)

    def published(
        self, name: str, version: int, *, seconds: float, loss: float, examples: int
    ) -> None:
        """Version ``version`` of ``name`` published after a round of ``seconds`` that
        trained ``examples`` examples to ``loss`` (nats)."""
        self.published_versions.inc()
        self.param_version.labels(name=name).set(version)
        self.round_seconds.observe(seconds)
        if math.isfinite(loss):
            self.loss.set(loss)
        if seconds > 0:
            self.examples_per_s.set(examples / seconds)

    def set_ready(self, ready: bool) -> None:
        """1 when the trainer is caught up with the catalog and the models topic."""
        self.ready.set(1 if ready else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class AggregatorMetrics:
    """The item aggregation's metrics (``interest aggregate``), on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.signals = Counter(
            "interest_item_signals_total",
            "Item signals read, by outcome (applied, duplicate, deleted_item)",
            ["outcome"],
            registry=r,
        )
        self.signal_records_rejected = Counter(
            "interest_item_signal_records_rejected_total",
            "Item-signals records (or entries of a bundle) refused, by machine-readable reason",
            ["reason"],
            registry=r,
        )
        self.items_held = Gauge(
            "interest_items_held", "Items whose knowledge this aggregator owns", registry=r
        )
        self.items_published = Counter(
            "interest_item_records_published_total",
            "Records published to the items topic (tombstones included)",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "interest_item_flush_seconds",
            "Time to publish the changed items and commit the input offsets",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.publish_latency = Histogram(
            "interest_item_publish_latency_seconds",
            "Event ingest (Kafka timestamp) to its item knowledge being published",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.restore_seconds = Histogram(
            "interest_item_restore_seconds",
            "Time to restore the items of newly assigned partitions from the items topic",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.fusion_updates = Counter(
            "interest_fusion_updates_total",
            "Fusion feedback lessons applied to the fleet's fusion weights",
            registry=r,
        )
        self.param_version = Gauge(
            "interest_param_version",
            "Version of each learned parameter published by this aggregator",
            ["name"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "interest_consumer_lag_records",
            "Records between the consumer's position and the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            "interest_ready",
            "1 when the catalog is loaded and assigned partitions are restored",
            registry=r,
        )

    def signals_folded(self, *, applied: int, duplicates: int, deleted: int) -> None:
        """Count signals by outcome."""
        for outcome, n in (
            ("applied", applied),
            ("duplicate", duplicates),
            ("deleted_item", deleted),
        ):
            if n:
                self.signals.labels(outcome=outcome).inc(n)

    def signal_rejected(self, reason: str) -> None:
        """Count one refused item-signals record."""
        self.signal_records_rejected.labels(reason=reason).inc()

    def flushed(
        self, *, seconds: float, records: int, ingested_at: Iterable[float], now: float
    ) -> None:
        """Record one publication of ``records`` item records taking ``seconds``."""
        self.flush_seconds.observe(seconds)
        self.items_published.inc(records)
        for ts in ingested_at:
            if ts > 0:
                self.publish_latency.observe(max(0.0, now - ts))

    def holding(self, items: int) -> None:
        """Set the number of items owned."""
        self.items_held.set(items)

    def restored(self, seconds: float) -> None:
        """Observe one restore's duration."""
        self.restore_seconds.observe(seconds)

    def fusion(self, updates: int, version: int | None) -> None:
        """Count fusion lessons applied; set the published version."""
        if updates:
            self.fusion_updates.inc(updates)
        if version is not None:
            self.param_version.labels(name="fusion.weights").set(version)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set consumer lag (records) per ``(topic, partition)`` owned."""
        for (topic, partition), records in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, records))

    def set_ready(self, ready: bool) -> None:
        """1 when ready, else 0."""
        self.ready.set(1 if ready else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
