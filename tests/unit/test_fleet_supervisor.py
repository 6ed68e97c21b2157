"""The fleet supervisor's pure parts: settings hand-over, back-off, status line."""

from __future__ import annotations

import pytest

from consumers.cli import load_settings
from consumers.fleet import (
    Backoff,
    WorkerStatus,
    format_status,
    histogram_buckets,
    histogram_quantile,
    settings_env,
)
from interest_core.settings import Settings


def test_settings_reach_the_children_exactly() -> None:
    wanted = Settings().replace(
        kafka={"bootstrap_servers": "127.0.0.1:40001", "client_id": "123"},
        topics={"events": "t1.events", "events_partitions": 3},
        consumer={"max_poll_interval_ms": 3000},
        model={"slot_similarity": 0.7},
        encoder={"backend": "hashing", "query_prefix": 'say "hi"\n'},
        metrics={"enabled": False},
    )
    env = settings_env(wanted, Settings())
    assert env["INTEREST__KAFKA__CLIENT_ID"] == '"123"'  # stays a string
    assert "INTEREST__BATCH__MAX_EVENTS" not in env  # unchanged keys are not sent
    assert load_settings(None, env) == wanted


def test_settings_env_is_empty_when_nothing_differs() -> None:
    assert settings_env(Settings(), Settings()) == {}


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, stable_after_s=60.0)
    delays = [backoff.next_delay(uptime_s=0.5) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.next_delay(uptime_s=61.0) == 1.0
    assert backoff.next_delay(uptime_s=0.1) == 2.0


def test_status_line_shows_what_an_operator_needs() -> None:
    status = WorkerStatus(
        "fleet-1", 9401, pid=4242, state="running", restarts=2, events_per_s=812.34, ready=True
    )
    line = format_status(status)
    for part in ("fleet-1", "4242", "running", "restarts 2", ":9401", "812.3 ev/s", "ready"):
        assert part in line
    assert "not ready" in format_status(WorkerStatus("fleet-0", 9400, ready=False))


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    samples = [
        ("interest_x_seconds_bucket", {"le": "0.1"}, 30.0),
        ("interest_x_seconds_bucket", {"le": "0.5"}, 60.0),
        ("interest_x_seconds_bucket", {"le": "1.0"}, 70.0),
        ("interest_x_seconds_bucket", {"le": "+Inf"}, 70.0),
        # a second worker's buckets add up with the first's
        ("interest_x_seconds_bucket", {"le": "0.1"}, 20.0),
        ("interest_x_seconds_bucket", {"le": "0.5"}, 30.0),
        ("interest_x_seconds_bucket", {"le": "1.0"}, 30.0),
        ("interest_x_seconds_bucket", {"le": "+Inf"}, 30.0),
        ("interest_x_seconds_count", {}, 100.0),
    ]
    buckets = histogram_buckets(samples, "interest_x_seconds")
    assert buckets == {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    # everything beyond the last finite bound: report that bound
    assert histogram_quantile(0.9, {0.1: 1.0, float("inf"): 10.0}) == 0.1
