"""The report helpers every harness command shares."""

from __future__ import annotations

import argparse
import os

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
