"""The latency run's course over time (percentiles per window of ingest time), and how busy
the worker's thread was over its batches."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from consumers.harness.bench_latency import WINDOW_S, latency_windows, replayed
from consumers.latency import BatchLatency, processing_load


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


def _batch(started: float, processed: float, cpu_s: float, records: int) -> BatchLatency:
    times = np.full(records, started - 0.01)
    return BatchLatency(
        ingested=times,
        polled=times,
        started=started,
        processed=processed,
        acked=processed + 0.005,
        records=records,
        process_cpu_s=cpu_s,
    )


def test_processing_load_says_how_busy_the_worker_thread_was() -> None:
    # Two batches over one second: 0.3 s and 0.2 s of processing (wall), 0.25 s and
    # 0.15 s of it on a core, 100 and 60 records.
    batches = [_batch(10.0, 10.3, 0.25, 100), _batch(10.8, 11.0, 0.15, 60)]
    load = processing_load(batches)
    assert load["process_cpu_us_per_record"] == pytest.approx(1e6 * 0.4 / 160)
    assert load["process_busy_share"] == pytest.approx(0.5)
    assert load["process_on_cpu_share"] == pytest.approx(0.8)


def test_processing_load_of_nothing_is_unknown_not_zero() -> None:
    assert processing_load([]) == {
        "process_cpu_us_per_record": None,
        "process_busy_share": None,
        "process_on_cpu_share": None,
    }
    # A worker that did not measure its CPU (0) has no CPU figures, only its busy share.
    load = processing_load([_batch(1.0, 1.5, 0.0, 10), _batch(1.5, 2.0, 0.0, 10)])
    assert load["process_cpu_us_per_record"] is None
    assert load["process_on_cpu_share"] is None
    assert load["process_busy_share"] == pytest.approx(1.0)


def test_the_latency_runs_replay_the_stream_as_new_users() -> None:
    lines = [
        orjson.dumps({"event_id": f"e{i}", "user_id": user, "type": "rate", "item_id": item})
        for i, (user, item) in enumerate([("u1", "i1"), ("u2", "i1"), ("u1", "i2")])
    ]
    records = replayed(lines, 7, "h")
    events = [orjson.loads(value) for _, _, value in records]
    # The stream's order and items, pass after pass...
    assert [e["item_id"] for e in events] == ["i1", "i1", "i2"] * 2 + ["i1"]
    # ...each pass by people the worker has not seen: no event id and no (user, item)
    # repeats, so nobody takes again what they already took.
    assert len({e["event_id"] for e in events}) == 7
    assert len({(e["user_id"], e["item_id"]) for e in events}) == 7
    assert [e["user_id"] for e in events[:4]] == ["u1~h0", "u2~h0", "u1~h0", "u1~h1"]
    # Keyed by the new user, with the event id to match the worker's records by.
    assert all(key == e["user_id"].encode() for (_, key, _), e in zip(records, events, strict=True))
    assert [event_id for event_id, _, _ in records] == [e["event_id"] for e in events]
    # A run with another tag shares no id with this one.
    other = {event_id for event_id, _, _ in replayed(lines, 7, "t")}
    assert not other & {e["event_id"] for e in events}
