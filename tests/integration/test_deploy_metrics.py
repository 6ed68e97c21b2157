"""The Grafana dashboard queries only metrics a live worker and aggregator export.

One worker and one item aggregator run in this process on the embedded broker with the
hashing encoder; the worker gets a small catalog, good events and a malformed one, its
item signals go through the aggregator and come back as item knowledge, and both
/metrics are scraped over HTTP like Prometheus does.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.fleet import scrape_samples
from consumers.item_aggregator import ItemAggregator
from consumers.worker import Worker
from interest_core.settings import Settings
from producers.kafka_client import make_producer
from producers.topics import create_topics
from tests.deploy_checks import dashboard_metric_names, exported_sample_names

pytestmark = pytest.mark.integration


def test_every_dashboard_metric_is_exported_by_a_live_worker(kafka_settings: Settings) -> None:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    create_topics(settings)
    producer = make_producer(settings)
    for i in range(6):
        item = {"item_id": f"i{i}", "title": f"Item {i}", "category": ["Jazz", "Hiking"][i % 2]}
        producer.send(settings.topics.catalog, key=f"i{i}".encode(), value=orjson.dumps(item))
    producer.flush()

    worker = Worker(settings, worker_id="deploy-metrics", registry=CollectorRegistry())
    aggregator = ItemAggregator(
        settings.replace(items={"metrics_port": 0, "flush_interval_ms": 100}),
        aggregator_id="deploy-metrics-items",
        registry=CollectorRegistry(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    items_thread = threading.Thread(target=aggregator.run, args=(stop,), daemon=True)
    items_thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.metrics_port is None or not worker.ready:
            assert time.monotonic() < deadline, worker.not_ready_reasons()
            assert thread.is_alive(), "the worker stopped"
            time.sleep(0.2)
        url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        now = time.time()
        for n in range(20):
            event = {"user_id": f"u{n % 3}", "ts": now + n, "type": "click", "item_id": f"i{n % 6}"}
            producer.send(
                settings.topics.events, key=f"u{n % 3}".encode(), value=orjson.dumps(event)
            )
        producer.send(settings.topics.events, key=b"u9", value=b"{not json")
        producer.flush()

        def total(name: str) -> float:
            return sum(v for s, _, v in scrape_samples(url) if s == name)

        while total("interest_events_consumed_total") < 21:
            assert time.monotonic() < deadline + 60, "the worker did not consume the events"
            time.sleep(0.2)
        while total("interest_recommendations_published_total") < 1:
            assert time.monotonic() < deadline + 60, "no recommendation published"
            time.sleep(0.2)
        # The signals went through the aggregation and came back as item knowledge.
        while total("interest_item_records_total") < 1:
            assert time.monotonic() < deadline + 60, "no item knowledge came back"
            time.sleep(0.2)
        with urllib.request.urlopen(url, timeout=5) as response:
            exposition = response.read().decode()
        assert aggregator.metrics_port is not None
        items_url = f"http://127.0.0.1:{aggregator.metrics_port}/metrics"
        with urllib.request.urlopen(items_url, timeout=5) as response:
            items_exposition = response.read().decode()
    finally:
        stop.set()
        thread.join(timeout=30)
        items_thread.join(timeout=30)
        producer.close()

    exported = exported_sample_names(exposition) | exported_sample_names(items_exposition)
    missing = sorted(dashboard_metric_names() - exported)
    assert not missing, f"the dashboard queries metrics no process exports: {missing}"
    # The panels that matter most show real data, not just declared families.
    present = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    for name in (
        "interest_events_consumed_total",
        "interest_events_deadlettered_total",
        "interest_recommendations_published_total",
        "interest_ingest_to_publish_seconds_bucket",
        "interest_batch_size_bucket",
        "interest_encoder_seconds_bucket",
        "interest_ready",
        "interest_catalog_items",
        "interest_item_knowledge_latency_seconds_bucket",
        "interest_item_signals_published_total",
    ):
        assert name in present, name
    items_present = {
        sample.name
        for family in text_string_to_metric_families(items_exposition)
        for sample in family.samples
    }
    for name in ("interest_item_signals_total", "interest_item_records_published_total"):
        assert name in items_present, name
