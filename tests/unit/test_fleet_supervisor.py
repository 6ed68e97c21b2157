"""The fleet supervisor's pure parts: settings hand-over, back-off, status line."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from consumers.cli import load_settings
from consumers.fleet import (
    Backoff,
    ExitLog,
    Fleet,
    WorkerStatus,
    _where_it_died,
    format_status,
    histogram_buckets,
    histogram_quantile,
    settings_env,
)
from interest_core.settings import Settings
from producers.broker import ephemeral_ports, free_port, free_ports, port_bindable


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


def test_three_quick_exits_make_a_crash_loop_that_names_the_offset(tmp_path) -> None:
    exits = ExitLog(window_s=300.0, threshold=3)
    exits.record(100.0, "interest.events[3]@1234 (PublishError: too big)")
    exits.record(102.0, "interest.events[3]@1234 (PublishError: too big)")
    assert exits.crash_loop(103.0) is None  # two exits are not a loop yet
    exits.record(106.0, "interest.events[3]@1234 (PublishError: too big)")
    note = exits.crash_loop(107.0)
    assert note == (
        "crash loop: 3 exits in 6 s, last at offset interest.events[3]@1234 (PublishError: too big)"
    )
    assert exits.crash_loop(500.0) is None  # the window passed without another exit
    line = format_status(WorkerStatus("fleet-0", 9400, state="backoff", crash_loop=note))
    assert note in line


def test_the_crash_report_says_where_the_worker_died(tmp_path) -> None:
    report = tmp_path / "fleet-0.crash.json"
    report.write_text(
        json.dumps({"offsets": {"interest.events[3]": 1234}, "error": "PublishError: x"})
    )
    assert _where_it_died(report, 1) == "interest.events[3]@1234 (PublishError: x)"
    assert not report.exists()  # read once
    assert _where_it_died(report, -9) == "unknown (exit signal 9, no crash report)"


def test_a_restarted_worker_is_told_its_restarts_and_crash_loop() -> None:
    fleet = Fleet(Settings(), 1, base_metrics_port=9400)
    status = fleet._children[0].status
    assert "--restarts" not in fleet.command(0)
    assert "--crash-file" in fleet.command(0)
    status.restarts = 4
    status.crash_loop = "crash loop: 3 exits in 6 s, last at offset interest.events[0]@7 (E: x)"
    cmd = fleet.command(0)
    assert cmd[cmd.index("--restarts") + 1] == "4"
    assert cmd[cmd.index("--crash-loop") + 1] == status.crash_loop
    fleet.stop()  # removes the crash-report folder
    assert not Path(cmd[cmd.index("--crash-file") + 1]).parent.exists()


def test_a_fleet_shares_the_cores_between_its_workers_encoders() -> None:
    """n workers that each run torch on every core slow each other several-fold: a fleet
    gives each cores / n threads, unless the settings name a number."""
    cores = len(os.sched_getaffinity(0))
    for n, expected in [(1, cores), (2, max(1, cores // 2)), (cores * 4, 1)]:
        fleet = Fleet(Settings(), n, base_metrics_port=9400, env={})
        assert fleet._env["INTEREST__RUNTIME__TORCH_THREADS"] == str(expected)
        fleet.stop()
    chosen = Fleet(
        Settings().replace(runtime={"torch_threads": 3}), 2, base_metrics_port=9400, env={}
    )
    assert chosen._env["INTEREST__RUNTIME__TORCH_THREADS"] == "3"  # the settings' own
    chosen.stop()


def test_picked_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    # Outgoing connections (every Kafka client's) take their local ports from the
    # ephemeral range; a picked port inside it can be taken before its server binds it.
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert all(port_bindable("127.0.0.1", port) for port in ports)
    span = ephemeral_ports()
    if span is not None:
        assert not any(span[0] <= port <= span[1] for port in ports)


def _exited(fleet: Fleet) -> None:
    for child in fleet._children:
        assert child.process is not None
        child.process.wait(timeout=10)


def test_a_picked_port_taken_while_its_child_is_down_moves_and_a_configured_one_stays() -> None:
    false = shutil.which("false")
    assert false is not None
    quick = Backoff(initial_s=0.0, max_s=0.0)
    # A child that exits at once (as one that cannot bind its metrics port does).
    picked = Fleet(Settings(), 1, base_metrics_port=0, aggregators=0, python=false, backoff=quick)
    configured_port = free_port()
    configured = Fleet(
        Settings(), 1, base_metrics_port=configured_port, aggregators=0, python=false, backoff=quick
    )
    try:
        for fleet in (picked, configured):
            fleet.start()
            _exited(fleet)
            port = fleet._children[0].status.metrics_port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
                squatter.bind(("127.0.0.1", port))
                squatter.listen()
                fleet.poll(scrape=False)  # sees the exit and restarts at once
            status = fleet._children[0].status
            assert status.restarts == 1
            if fleet is picked:
                assert status.metrics_port != port
                assert fleet.metrics_urls() == [f"http://127.0.0.1:{status.metrics_port}/metrics"]
            else:
                assert status.metrics_port == port == configured_port
            _exited(fleet)
            fleet.poll(scrape=False)  # nobody holds it now: the port stays
            assert fleet._children[0].status.restarts == 2
            assert fleet._children[0].status.metrics_port == status.metrics_port
    finally:
        picked.stop()
        configured.stop()
