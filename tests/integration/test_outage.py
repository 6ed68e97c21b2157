"""Broker outage: the broker freezes (SIGSTOP) for ~10 s in the middle of a replay.

The embedded broker keeps data in memory only, so a restart would lose every topic; a
frozen process is an outage that keeps the data (clients see requests time out, as
with a network partition). Checked: the worker neither crashes nor stops serving its
probes; ``/readyz`` turns 503 (``broker_unreachable``) during the freeze and 200 again
after it; afterwards the worker carries on; the replay tool delivers every event exactly once
across the freeze; the worker applies every event exactly once.

Uses its own broker, so the freeze does not stall the other tests.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from interest_core.settings import Settings
from producers.broker import EmbeddedBroker, free_port
from producers.publish import PublishSummary
from producers.replay import replay
from producers.synthetic import generate_dataset
from producers.topics import create_topics
from tests.integration.survival import (
    committed_everything,
    expected_counts,
    publish_catalog,
    read_topic,
    reveal_tail,
    state_counts,
    wait_until,
    worker_thread,
)

pytestmark = pytest.mark.integration

FREEZE_S = 10.0


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker("127.0.0.1", free_port()) as running:
        yield running


def _probe(url: str) -> int:
    """HTTP status of ``url`` (0 when it does not answer within 2 s)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_worker_and_replay_survive_a_frozen_broker(
    own_broker: EmbeddedBroker, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings().replace(
        kafka={"bootstrap_servers": own_broker.bootstrap_servers, "request_timeout_ms": 8000},
        topics={
            "events": f"o{suffix}.events",
            "catalog": f"o{suffix}.catalog",
            "recommendations": f"o{suffix}.recommendations",
            "deadletter": f"o{suffix}.deadletter",
            "state": f"o{suffix}.state",
            "events_partitions": 4,
            "recommendations_partitions": 4,
            "state_partitions": 4,
        },
        consumer={
            "group_id": f"og{suffix}",
            "max_poll_interval_ms": 3000,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        encoder={"backend": "hashing"},
        metrics={"port": 0},
    )
    data = generate_dataset(users=50, items=150, events=3000, seed=8)
    log_path = tmp_path / "events.jsonl"
    log_path.write_bytes(b"\n".join(data.event_lines()) + b"\n")
    create_topics(settings)
    publish_catalog(settings, data.catalog)

    with worker_thread(settings) as running:
        base = f"http://127.0.0.1:{running.worker.metrics_port}"
        summaries: list[PublishSummary] = []
        errors: list[BaseException] = []

        def do_replay() -> None:
            try:
                summaries.append(replay(log_path, settings, rate=250.0, progress=False))
            except BaseException as exc:
                errors.append(exc)

        replayer = threading.Thread(target=do_replay, daemon=True)
        replayer.start()
        time.sleep(3.0)  # let some events through first
        assert _probe(f"{base}/readyz") == 200
        own_broker.pause()
        probes: list[tuple[int, int]] = []
        reasons: list[list[str]] = []
        try:
            deadline = time.monotonic() + FREEZE_S
            while time.monotonic() < deadline:
                probes.append((_probe(f"{base}/healthz"), _probe(f"{base}/readyz")))
                reasons.append(running.worker.not_ready_reasons())
                assert running.alive, f"the worker died during the outage: {running.error!r}"
                time.sleep(1.0)
        finally:
            own_broker.resume()
        record_property("readyz_during_outage", sorted(Counter(r for _, r in probes).items()))
        assert all(health == 200 for health, _ in probes), probes
        # Not ready once no round trip has succeeded for max(session timeout, 5 s) = 6 s;
        # the freeze lasts 10 s, so some probe in it saw 503.
        assert 503 in {ready for _, ready in probes}, probes
        assert any("broker_unreachable" in why for why in reasons), reasons
        wait_until(
            lambda: _probe(f"{base}/readyz") == 200,
            90.0,
            "/readyz is 200 again after the outage",
            every_s=0.5,
        )

        replayer.join(120.0)
        assert not replayer.is_alive() and not errors, errors
        summary = summaries[0]
        assert summary.ok and summary.failed == 0, summary.report()
        assert summary.sent == len(data.events)
        reveal_tail(settings, settings.topics.events)
        wait_until(
            lambda: committed_everything(settings) or not running.alive,
            120.0,
            "the worker caught up after the outage",
        )
        assert running.alive and running.error is None, running.error

    # The replay delivered every event exactly once: the topic holds the log, no more.
    on_topic = Counter(bytes(r.value) for r in read_topic(settings, settings.topics.events))
    assert on_topic == Counter(orjson.dumps(e) for e in data.events) or on_topic == Counter(
        data.event_lines()
    )
    # The worker applied every event exactly once.
    counts, deleted = state_counts(settings)
    assert not deleted
    assert counts == expected_counts(data.events)
