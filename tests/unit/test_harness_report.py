"""The report helpers every harness command shares."""

from __future__ import annotations

import argparse
import os
import sys
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from consumers.harness.report import (
    command_line,
    git_state,
    histogram_totals,
    machine_info,
    percentiles,
    rss_bytes,
    rss_mib,
    sample_total,
)


def test_percentiles() -> None:
    assert percentiles([]) == {}
    values = list(range(1, 101))
    got = percentiles(values, (50, 99))
    assert got == {"p50": pytest.approx(50.5), "p99": pytest.approx(99.01)}


def test_command_line_is_rebuilt_from_the_arguments_in_process() -> None:
    args = argparse.Namespace(
        command="bench", log_level="INFO", quick=True, soak=None, out="out/b.json", rate=0
    )
    assert command_line("nonesuch", args) == "interest nonesuch --quick --out out/b.json"


def test_memory_of_this_process_and_of_a_gone_one() -> None:
    own = rss_bytes()
    assert own is not None and own > 1_000_000
    assert rss_bytes(os.getpid()) == pytest.approx(own, rel=0.5)
    mib = rss_mib()
    assert mib is not None and mib > 1.0
    assert rss_bytes(2**22 + 12345) is None  # no such process


def test_git_state_machine_info_and_histogram_totals() -> None:
    state = git_state()
    assert set(state) == {"commit", "dirty"}
    assert machine_info()["cpu_count"] >= 1
    registry = CollectorRegistry()
    histogram = Histogram("stage_seconds", "a stage", registry=registry)
    assert histogram_totals(registry, "stage_seconds") == {"total_s": 0.0, "batches": 0.0}
    histogram.observe(0.25)
    histogram.observe(0.5)
    assert histogram_totals(registry, "stage_seconds") == {"total_s": 0.75, "batches": 2.0}


def test_sample_total_sums_every_label_set() -> None:
    samples = [
        ("interest_events_consumed_total", {"type": "view"}, 3.0),
        ("interest_events_consumed_total", {"type": "click"}, 2.0),
        ("interest_users_held", {}, 7.0),
    ]
    assert sample_total(samples, "interest_events_consumed_total") == 5.0
    assert sample_total(samples, "missing") == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_process_cpu_seconds_count_a_process_work() -> None:
    """The bench adds the publisher process's CPU to the worker's: read from /proc."""
    from consumers.harness.bench import process_cpu_s

    assert process_cpu_s(None) == 0.0
    before, started = process_cpu_s(os.getpid()), time.process_time()
    while time.process_time() - started < 0.2:  # burn 0.2 s of CPU, by the process's clock
        sum(range(10_000))
    # /proc counts in clock ticks (1/100 s): at least most of the 0.2 s shows
    assert process_cpu_s(os.getpid()) - before >= 0.15
    assert process_cpu_s(2**22 + 12_345) == 0.0  # no such process
