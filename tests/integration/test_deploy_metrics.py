"""The Grafana dashboard queries only metrics a live worker exports.

One worker runs in this process on the embedded broker with the hashing encoder; it
gets a small catalog, good events and a malformed one, and its /metrics is scraped
over HTTP like Prometheus does.
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
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
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
        with urllib.request.urlopen(url, timeout=5) as response:
            exposition = response.read().decode()
    finally:
        stop.set()
        thread.join(timeout=30)
        producer.close()

    missing = sorted(dashboard_metric_names() - exported_sample_names(exposition))
    assert not missing, f"the dashboard queries metrics the worker does not export: {missing}"
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
    ):
        assert name in present, name
