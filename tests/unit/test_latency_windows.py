"""The latency run's course over time: percentiles per window of ingest time."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.harness.bench_latency import WINDOW_S, latency_windows


def test_windows_split_by_time_and_keep_every_event() -> None:
    since = np.array([0.5, 3.0, 9.9, 10.0, 15.0, 29.0])
    latency = np.array([0.010, 0.020, 0.030, 0.100, 0.200, 0.500])
    windows = latency_windows(since, latency)
    assert [w["from_s"] for w in windows] == [0.0, WINDOW_S, 2 * WINDOW_S]
    assert [w["events"] for w in windows] == [3, 2, 1]
    assert windows[0]["p50"] == pytest.approx(20.0)  # milliseconds
    assert windows[2]["p99"] == pytest.approx(500.0)
    # a drift that the run's own percentiles blur shows window by window
    assert windows[0]["p99"] < windows[1]["p50"] < windows[2]["p50"]


def test_an_empty_window_is_left_out_and_no_events_give_none() -> None:
    windows = latency_windows(np.array([1.0, 25.0]), np.array([0.001, 0.002]))
    assert [w["from_s"] for w in windows] == [0.0, 2 * WINDOW_S]
    assert latency_windows(np.empty(0), np.empty(0)) == []
