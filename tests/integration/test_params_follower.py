"""The models topic on a real broker: a follower restores the last good version of each
parameter, refuses malformed records with a reason without stopping, and sees live
updates."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from consumers.metrics import WorkerMetrics
from consumers.params_follower import ParamsFollower, publish_params
from interest_core.params import ParamSpec, encode_params
from interest_core.settings import Settings
from producers.kafka_client import make_producer
from producers.topics import create_topics

pytestmark = pytest.mark.integration

SPECS = [ParamSpec("fusion.weights", (3,)), ParamSpec("adapter.matrix", (2, 2), "model-a")]


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    create_topics(kafka_settings)
    return kafka_settings


def _poll_until(follower: ParamsFollower, done, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "follower did not see the records in time"
        follower.poll(0.2)


def test_follower_restores_last_good_versions_and_survives_bad_records(settings: Settings) -> None:
    topic = settings.topics.models
    producer = make_producer(settings)
    raw = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        for version in (1, 2):
            record = encode_params(
                "fusion.weights", [version, 1.0, 1.0], version=version, created_at=time.time()
            )
            publish_params(producer, topic, record)
        good_matrix = encode_params(
            "adapter.matrix", np.eye(2), version=4, created_at=time.time(), model="model-a"
        )
        publish_params(producer, topic, good_matrix)
        # Malformed and mismatched records after the good ones: none may replace them.
        bad = encode_params("fusion.weights", [9.0, 9.0, 9.0], version=3, created_at=0.0).to_dict()
        bad["checksum"] = "sha256:" + "0" * 64
        raw.send(topic, key=b"fusion.weights", value=orjson.dumps(bad))
        raw.send(topic, key=b"fusion.weights", value=b"\xff not json")
        other_model = encode_params(
            "adapter.matrix", np.ones((2, 2)), version=5, created_at=0.0, model="model-b"
        )
        raw.send(topic, key=b"adapter.matrix", value=other_model.to_json())
        raw.send(topic, key=None, value=b"{}")
        raw.flush()
    finally:
        raw.close()

    metrics = WorkerMetrics(CollectorRegistry())
    follower = ParamsFollower(settings, SPECS, hooks=metrics).start()
    try:
        _poll_until(follower, lambda: follower.caught_up)
        weights = follower.get("fusion.weights")
        assert weights is not None and weights.version == 2
        np.testing.assert_array_equal(weights.values, [2.0, 1.0, 1.0])
        matrix = follower.get("adapter.matrix")
        assert matrix is not None and matrix.version == 4
        assert follower.table.rejected == {"bad_checksum": 1, "not_json": 1, "wrong_model": 1}
        registry = metrics.registry
        assert (
            registry.get_sample_value("interest_model_records_total", {"outcome": "bad_checksum"})
            == 1.0
        )
        assert (
            registry.get_sample_value("interest_model_records_total", {"outcome": "missing_key"})
            == 1.0
        )
        assert registry.get_sample_value("interest_param_version", {"name": "fusion.weights"}) == 2

        # Live: a newer version published after catch-up is picked up.
        publish_params(
            producer,
            topic,
            encode_params("fusion.weights", [3.0, 3.0, 3.0], version=7, created_at=time.time()),
        )
        seen: list[int] = []

        def newer() -> bool:
            seen.extend(r.version for r in follower.poll(0.2))
            return 7 in seen

        _poll_until(follower, newer)
        assert follower.get("fusion.weights").version == 7  # type: ignore[union-attr]
    finally:
        follower.close()
        producer.close()
