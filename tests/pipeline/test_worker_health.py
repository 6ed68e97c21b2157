"""The health server: /metrics from the registry, /healthz and /readyz from probes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from consumers.health import HealthServer
from consumers.metrics import WorkerMetrics


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_endpoints_follow_the_probes() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.records_consumed(["click"])
    not_ready = ["catalog loading"]
    with HealthServer(
        "127.0.0.1",
        0,
        render_metrics=metrics.exposition,
        liveness=lambda: [],
        readiness=lambda: list(not_ready),
    ) as server:
        assert server.port > 0
        status, body = get(server.url + "/metrics")
        assert status == 200
        assert b'interest_events_consumed_total{type="click"} 1.0' in body
        assert get(server.url + "/healthz")[0] == 200
        status, body = get(server.url + "/readyz")
        assert status == 503
        assert json.loads(body) == {"ready": False, "reasons": ["catalog loading"]}
        not_ready.clear()
        status, body = get(server.url + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        assert get(server.url + "/nope")[0] == 404


def test_a_failing_probe_answers_500() -> None:
    def broken() -> list[str]:
        raise RuntimeError("probe exploded")

    with HealthServer(
        "127.0.0.1",
        0,
        render_metrics=lambda: (b"", "text/plain"),
        liveness=broken,
        readiness=broken,
    ) as server:
        status, body = get(server.url + "/healthz")
        assert status == 500 and b"probe exploded" in body
