"""Replay planning (no broker): validation, time order, invalid lines, keys; JSONL helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from consumers.subscribe import Received, format_received
from interest_core.records import Intent, InterestLabel, Recommendation, RecommendedItem
from interest_core.settings import Settings
from producers.catalog import load_catalog
from producers.jsonl import best_effort_key, read_lines, write_jsonl
from producers.replay import plan_replay, replay

LINES = [
    b'{"event_id":"a","user_id":"u1","ts":30,"type":"view","item_id":"i1"}',
    b"",
    b'{"event_id":"b","user_id":7,"ts":"1970-01-01T00:00:10Z","type":"click","item_id":"i2"}',
    b"{not json",
    b'{"user_id":"u2","ts":10,"type":"view","item_id":"i3"}',
    b'{"user_id":"u3","ts":20,"type":"teleport"}',
    b'{"event_id":"c","user_id":"u1","ts":10,"type":"search","text":"jazz"}\r',
]


def test_plan_orders_by_time_keeps_original_bytes_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    plan = plan_replay(path, Settings())
    assert [(ts, key) for ts, key, _ in plan.records] == [
        (10.0, b"7"),
        (10.0, b"u2"),
        (10.0, b"u1"),
        (30.0, b"u1"),
    ]
    assert plan.records[0][2] == LINES[2]  # the original line, not a re-encoding
    assert plan.records[2][2] == LINES[6].rstrip(b"\r")
    summary = plan.summary
    assert summary.lines == 6
    assert dict(summary.rejected) == {"not_json": 1, "unknown_event_type": 1}
    assert [(n, r) for n, r, _ in summary.rejected_lines] == [
        (4, "not_json"),
        (6, "unknown_event_type"),
    ]
    assert "line 4: not_json" in summary.report()


def test_plan_with_invalid_lines_keeps_them_near_their_place(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    plan = plan_replay(path, Settings(), send_invalid=True)
    assert len(plan.records) == 6
    keys = [key for _, key, _ in plan.records]
    assert None in keys and b"u3" in keys  # unparseable: no key; parseable: its user_id


def test_jsonl_helpers(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.jsonl"
    assert write_jsonl(path, [{"b": 1, "a": 2}, b'{"c":3}\n']) == 2
    assert path.read_bytes() == b'{"b":1,"a":2}\n{"c":3}\n'
    assert list(read_lines(path)) == [(1, b'{"b":1,"a":2}'), (2, b'{"c":3}')]
    assert best_effort_key(b'{"user_id": 5}', "user_id") == b"5"
    assert best_effort_key(b'{"user_id": true}', "user_id") is None
    assert best_effort_key(b"[1]", "user_id") is None
    assert best_effort_key(b"{oops", "user_id") is None


def test_subscribe_formatting() -> None:
    rec = Recommendation(
        user_id="u42",
        version=17,
        event_ts=1_700_000_000.5,
        published_at=1_700_000_000.75,
        trigger_event_id="e-123",
        items=(RecommendedItem("m527", 0.83, "similar to 'X' you rated 5"),),
        interests=(InterestLabel("Drama", 0.41),),
        intent=Intent("browse", 0.72),
    )
    text = format_received(Received("u42", rec, rec.to_json(), 0, 5), {"m527": "Heat (1995)"})
    assert "u42  v17  event 2023-11-14 22:13:20Z" in text
    assert "+0.25 s" in text and "Drama 0.41" in text and "browse (0.72)" in text
    assert "m527 'Heat (1995)'" in text and "you rated 5" in text
    assert "DELETED" in format_received(Received("u9", None, None, 1, 2))


class RecordingProducer:
    """Stands in for KafkaProducer: records sends; fails the values it is told to."""

    def __init__(self, fail_values: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail_values = fail_values
        self.flushed = False

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> Future:
        self.sent.append((topic, key, value))
        future = Future()
        if value in self.fail_values:
            future.failure(KafkaTimeoutError("no ack"))
        else:
            future.success(None)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True


def test_replay_sends_in_time_order_and_counts_failures(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    producer = RecordingProducer(fail_values={LINES[0]})
    summary = replay(path, Settings(), producer=producer, speed=1e9)  # type: ignore[arg-type]
    assert [value for _, _, value in producer.sent] == [
        LINES[2],
        LINES[4],
        LINES[6].rstrip(b"\r"),
        LINES[0],
    ]
    assert {topic for topic, _, _ in producer.sent} == {"interest.events"}
    assert producer.flushed
    assert (summary.sent, summary.failed, dict(summary.failures)) == (
        3,
        1,
        {"KafkaTimeoutError": 1},
    )
    assert not summary.ok and "1 sends FAILED" in summary.report()


def test_catalog_load_keys_by_item_and_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(
        b'{"item_id": "i1", "title": "One"}\n'
        b'{"item_id": "i2"}\n'
        b'{"item_id": 3, "title": "Three", "deleted": true}\n'
    )
    producer = RecordingProducer()
    summary = load_catalog(path, Settings(), producer=producer)  # type: ignore[arg-type]
    assert [key for _, key, _ in producer.sent] == [b"i1", b"3"]
    assert summary.sent == 2 and dict(summary.rejected) == {"missing_field:title": 1}


def test_event_time_latency_is_shown_only_for_live_events() -> None:
    replayed = Recommendation(
        user_id="u1",
        version=1,
        event_ts=1_000_000_000.0,  # an event from 2001, published today
        published_at=1_700_000_000.0,
        trigger_event_id="e-1",
        items=(),
        interests=(),
        intent=None,
    )
    text = format_received(Received("u1", replayed, replayed.to_json(), 0, 1))
    assert "to publish" not in text and "u1  v1  event 2001-09-09" in text


def test_subscribe_says_whom_it_waits_for() -> None:
    import argparse

    from consumers.subscribe import waiting_line

    args = argparse.Namespace(user="u7", from_beginning=False, max=3, timeout=None)
    line = waiting_line(Settings(), args)
    assert "waiting for recommendations for user u7" in line
    assert "--from-beginning" in line and "exits after 3 records" in line
    args = argparse.Namespace(user=None, from_beginning=True, max=None, timeout=None)
    assert "for every user, from the beginning" in waiting_line(Settings(), args)
    assert "Ctrl-C stops" in waiting_line(Settings(), args)


def test_replaying_a_file_with_no_valid_line_exits_1_with_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumers.cli import main

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{not json\n" + b'{"user_id":"u3","ts":20,"type":"teleport"}\n')
    # No broker is involved: the file is refused before anything connects to Kafka.
    status = main(["replay", str(path), "--quiet"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "0 records sent" in out and "2 invalid lines skipped" in out
    assert "not_json" in out or "invalid_json" in out or "line 1" in out
    assert "nothing sent: every line is invalid" in err
