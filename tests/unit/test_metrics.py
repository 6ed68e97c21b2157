"""The worker's metrics: the contract's names, hooks that move them, the exposition."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumers.fleet import histogram_buckets, histogram_quantile
from consumers.metrics import WorkerMetrics

# The table in docs/ARCHITECTURE.md (counters are exposed with their _total name).
ARCHITECTURE = {
    "interest_events_consumed_total": "counter",
    "interest_events_deadlettered_total": "counter",
    "interest_events_duplicate_total": "counter",
    "interest_batch_size": "histogram",
    "interest_batch_seconds": "histogram",
    "interest_parse_seconds": "histogram",
    "interest_encoder_seconds": "histogram",
    "interest_texts_encoded_total": "counter",
    "interest_embedding_cache_hits_total": "counter",
    "interest_embedding_cache_misses_total": "counter",
    "interest_update_seconds": "histogram",
    "interest_index_search_seconds": "histogram",
    "interest_publish_seconds": "histogram",
    "interest_recommendations_published_total": "counter",
    "interest_event_to_publish_seconds": "histogram",
    "interest_ingest_to_publish_seconds": "histogram",
    "interest_consumer_lag_records": "gauge",
    "interest_users_held": "gauge",
    "interest_catalog_items": "gauge",
    "interest_state_writes_total": "counter",
    "interest_state_restore_seconds": "histogram",
    "interest_users_restored_total": "counter",
    "interest_users_evicted_total": "counter",
    "interest_ready": "gauge",
    "interest_records_trimmed_total": "counter",
    "interest_poison_records_total": "counter",
    "interest_worker_restarts_total": "counter",
    "interest_model_records_total": "counter",
    "interest_param_version": "gauge",
}


def exposed_types(metrics: WorkerMetrics) -> dict[str, str]:
    text = metrics.exposition()[0].decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    # prometheus_client declares a counter's family without _total in TYPE lines
    return {
        (name + "_total" if kind == "counter" and not name.endswith("_total") else name): kind
        for name, kind in types.items()
    }


def test_every_architecture_metric_with_its_type() -> None:
    types = exposed_types(WorkerMetrics(CollectorRegistry()))
    for name, kind in ARCHITECTURE.items():
        assert types.get(name) == kind, name
    for name in types:
        if name.endswith("_created"):  # prometheus_client's creation-time series
            continue
        assert name.startswith("interest_")
        assert re.search(
            r"(_total|_seconds|_bytes|_records|_size|_held|_items|_ready|_version)$", name
        )


def test_hooks_move_the_numbers() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    value = registry.get_sample_value
    metrics.records_consumed(["click", "click", "invalid", "search"])
    metrics.dead_lettered("not_json")
    metrics.dead_lettered("unknown_item", 2)
    metrics.batch_done(
        size=4,
        parse_s=0.001,
        encode_s=0.01,
        texts_encoded=1,
        cache_hits=2,
        cache_misses=1,
        events_applied=3,
        duplicates=1,
    )
    metrics.published(
        publish_s=0.002,
        batch_s=0.02,
        recommendations=2,
        tombstones=2,
        state_writes=3,
        published_at=1000.0,
        event_times=[999.5, 990.0],
        ingest_times=[999.9],
    )
    metrics.lag({("ev", 0): 5, ("ev", 1): -1})
    metrics.holding(users=7, catalog_items=100)
    metrics.state_restored(seconds=0.5, users=4)
    metrics.evicted(3)
    metrics.set_ready(True)
    assert value("interest_events_consumed_total", {"type": "click"}) == 2
    assert value("interest_events_consumed_total", {"type": "invalid"}) == 1
    assert value("interest_events_deadlettered_total", {"reason": "unknown_item"}) == 2
    assert value("interest_events_duplicate_total") == 1
    assert value("interest_batch_size_sum") == 4
    assert value("interest_texts_encoded_total") == 1
    assert value("interest_embedding_cache_hits_total") == 2
    assert value("interest_recommendations_published_total") == 2
    assert value("interest_tombstones_published_total") == 2
    assert value("interest_state_writes_total") == 3
    assert value("interest_event_to_publish_seconds_count") == 2
    assert value("interest_event_to_publish_seconds_sum") == 10.5
    assert value("interest_ingest_to_publish_seconds_sum") == 1000.0 - 999.9
    assert value("interest_consumer_lag_records", {"topic": "ev", "partition": "0"}) == 5
    assert value("interest_consumer_lag_records", {"topic": "ev", "partition": "1"}) == 0
    assert value("interest_users_held") == 7 and value("interest_catalog_items") == 100
    assert value("interest_users_restored_total") == 4
    assert value("interest_state_restore_seconds_count") == 1
    assert value("interest_users_evicted_total") == 3
    assert value("interest_ready") == 1
    metrics.partitions_released([("ev", 0), ("ev", 9)])
    assert value("interest_consumer_lag_records", {"topic": "ev", "partition": "0"}) is None


def test_bounding_and_restart_hooks_move_the_numbers() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    value = registry.get_sample_value
    assert value("interest_worker_restarts_total") == 0  # exported before any restart
    metrics.restarted(3)
    metrics.trimmed("deadletter")
    metrics.trimmed("state")
    metrics.trimmed("state")
    metrics.poisoned("text_too_long")
    assert value("interest_worker_restarts_total") == 3
    assert value("interest_records_trimmed_total", {"kind": "state"}) == 2
    assert value("interest_records_trimmed_total", {"kind": "deadletter"}) == 1
    assert value("interest_poison_records_total", {"reason": "text_too_long"}) == 1


def test_two_workers_two_registries() -> None:
    a, b = WorkerMetrics(CollectorRegistry()), WorkerMetrics(CollectorRegistry())
    a.records_consumed(["view"])
    assert a.registry.get_sample_value("interest_events_consumed_total", {"type": "view"}) == 1
    assert b.registry.get_sample_value("interest_events_consumed_total", {"type": "view"}) is None


def test_many_histogram_matches_prometheus_histogram() -> None:
    from prometheus_client import Histogram

    from consumers.metrics import ManyHistogram

    values = [0.0, 0.0004, 0.001, 0.0011, 0.3, 2.0, 7.5, 1e6, -3.0]
    buckets = (0.001, 0.01, 0.5, 5.0)
    reference = CollectorRegistry()
    plain = Histogram("x_seconds", "x", buckets=buckets, registry=reference)
    for v in values:
        plain.observe(max(v, 0.0))
    registry = CollectorRegistry()
    ManyHistogram("x_seconds", "x", buckets, registry).observe_many(values)
    for le in ("0.001", "0.01", "0.5", "5.0", "+Inf"):
        expected = reference.get_sample_value("x_seconds_bucket", {"le": le})
        assert registry.get_sample_value("x_seconds_bucket", {"le": le}) == expected, le
    assert registry.get_sample_value("x_seconds_count") == len(values)
    assert registry.get_sample_value("x_seconds_sum") == reference.get_sample_value("x_seconds_sum")


def test_latency_stages_from_a_batch() -> None:
    import numpy as np

    from consumers.latency import BatchLatency

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    for stage in ("kafka", "batch_wait", "process", "publish"):  # exposed before any batch
        assert (
            registry.get_sample_value("interest_latency_stage_seconds_count", {"stage": stage}) == 0
        )
    batch = BatchLatency(
        ingested=np.array([100.0, 100.5]),
        polled=np.array([101.0, 101.0]),
        started=101.25,
        processed=101.5,
        acked=102.0,
        records=2,
    )
    assert batch.ingest_to_publish().tolist() == [2.0, 1.5]
    stages = batch.stages()
    assert (sum(stages.values()) == batch.ingest_to_publish()).all()
    metrics.published(
        publish_s=0.5,
        batch_s=0.75,
        recommendations=1,
        tombstones=0,
        state_writes=1,
        published_at=batch.acked,
        event_times=[],
        ingest_times=batch.ingested,
        latency=batch,
    )
    value = registry.get_sample_value
    assert value("interest_latency_stage_seconds_sum", {"stage": "kafka"}) == 1.5
    assert value("interest_latency_stage_seconds_sum", {"stage": "batch_wait"}) == 0.5
    assert value("interest_latency_stage_seconds_sum", {"stage": "publish"}) == 1.0
    assert value("interest_ingest_to_publish_seconds_sum") == 3.5


@pytest.mark.parametrize("median_s", [0.02, 0.06, 0.1])
def test_the_p99_an_operator_reads_is_close_to_the_true_one(median_s: float) -> None:
    """histogram_quantile interpolates inside a bucket: the end-to-end buckets are dense
    where a p99 and its alert thresholds lie (50 ms to 1 s), so the p99 a dashboard reads
    stays within a tenth of the true one (with buckets at 0.1, 0.25 and 0.5 s alone it
    read up to 42 % high for these)."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    rng = np.random.default_rng(5)
    latencies = median_s * np.exp(0.8 * rng.standard_normal(20_000))
    metrics.ingest_to_publish.observe_many(latencies)
    samples = [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]
    buckets = histogram_buckets(samples, "interest_ingest_to_publish_seconds")
    read = histogram_quantile(0.99, buckets)
    true = float(np.percentile(latencies, 99))
    assert read is not None and abs(read / true - 1.0) < 0.1, (read, true)
