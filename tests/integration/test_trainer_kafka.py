"""The trainer role on a real broker: it reads the catalog and the events, publishes
versions of the adaptation layer to the models topic, and a rollback republishes an
archived one as the newest version."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.metrics import TrainerMetrics
from consumers.params_follower import ParamsFollower
from consumers.trainer import ADAPTER_PARAM, adapter_spec, rollback, run_trainer
from interest_core.settings import Settings
from producers.kafka_client import make_producer
from producers.topics import create_topics

pytestmark = pytest.mark.integration

ITEMS = 30
DIM = 256  # the hashing backend's width


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    configured = kafka_settings.replace(
        encoder={"backend": "hashing"},
        adapter={
            "publish_every_s": 0.5,
            "min_new_examples": 40,
            "batch_size": 32,
            "negatives": 8,
            "device": "cpu",
        },
    )
    create_topics(configured)
    return configured


def _publish_inputs(settings: Settings, users: int) -> None:
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    producer = make_producer(settings)
    try:
        for i in range(ITEMS):
            title = " ".join("".join(rng.choice(letters, 5)) for _ in range(3))
            producer.send(
                settings.topics.catalog,
                key=f"p{i}".encode(),
                value=orjson.dumps({"item_id": f"p{i}", "title": title}),
            )
        producer.flush()
        for n in range(users):
            first = int(rng.integers(ITEMS))
            for j, item in enumerate((first, first ^ 1)):
                event = {
                    "event_id": f"e{n}-{j}",
                    "user_id": f"u{n}",
                    "ts": 1_700_000_000 + n * 10 + j * 3600,
                    "type": "click",
                    "item_id": f"p{item}",
                }
                producer.send(
                    settings.topics.events, key=f"u{n}".encode(), value=orjson.dumps(event)
                )
        producer.send(settings.topics.events, key=b"x", value=b"\xff not an event")
        producer.flush()
    finally:
        producer.close()


def _newest(settings: Settings, at_least: int, timeout_s: float = 60.0) -> int:
    follower = ParamsFollower(settings, [adapter_spec(DIM, "hashing")], barrier=False).start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            follower.poll(0.3)
            held = follower.get(ADAPTER_PARAM)
            if follower.caught_up and held is not None and held.version >= at_least:
                assert held.values.shape == (DIM, DIM)
                assert held.model == "hashing"
                return held.version
            assert time.monotonic() < deadline, "no adapter version on the models topic"
    finally:
        follower.close()


def test_trainer_publishes_versions_and_rollback_renumbers(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish_inputs(settings, users=150)
    stop = threading.Event()
    result: list[int] = []
    metrics = TrainerMetrics(CollectorRegistry())
    thread = threading.Thread(
        target=lambda: result.append(
            run_trainer(
                settings,
                stop,
                archive=tmp_path,
                trainer_id="t-test",
                metrics=metrics,
                metrics_port=0,
            )
        ),
        daemon=True,
    )
    thread.start()
    try:
        first = _newest(settings, 1)
        assert first >= 1
        registry = metrics.registry
        deadline = time.monotonic() + 30
        while registry.get_sample_value("interest_trainer_events_total") != 300:
            assert time.monotonic() < deadline, "the trainer did not apply every valid event"
            time.sleep(0.2)
        assert registry.get_sample_value("interest_trainer_versions_published_total") >= 1
        assert registry.get_sample_value("interest_param_version", {"name": ADAPTER_PARAM}) >= 1
        assert registry.get_sample_value("interest_ready") == 1
    finally:
        stop.set()
        thread.join(timeout=60)
    assert result == [0]
    archived = sorted(tmp_path.glob(f"{ADAPTER_PARAM}-v*.json"))
    assert archived, "the trainer archives what it publishes"
    assert rollback(settings, archived[0]) == 0
    out = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["version"] > first and out["meta"]["rollback_of"] == 1
    assert _newest(settings, out["version"]) == out["version"]
