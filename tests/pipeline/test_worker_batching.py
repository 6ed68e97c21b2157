"""The micro-batcher: bounded by size and by wait, offsets to commit, lost partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.batching import InputRecord, MicroBatcher, next_offsets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rec(partition: int, offset: int, topic: str = "ev") -> InputRecord:
    return InputRecord(topic, partition, offset, b"k", b"{}")


def test_due_when_full() -> None:
    batcher = MicroBatcher(3, 10.0, clock=Clock())
    assert not batcher.add(rec(0, 0))
    assert not batcher.add(rec(0, 1))
    assert batcher.room == 1
    assert batcher.add(rec(1, 0))
    assert batcher.full and batcher.time_left() == 0.0


def test_due_after_wait_from_first_record() -> None:
    clock = Clock()
    batcher = MicroBatcher(100, 0.02, clock=clock)
    assert batcher.time_left() is None and not batcher.due()
    batcher.add(rec(0, 0))
    clock.now += 0.015
    batcher.add(rec(0, 1))  # a later record does not restart the wait
    assert not batcher.due()
    assert batcher.time_left() == pytest.approx(0.005)
    clock.now += 0.006
    assert batcher.due()


def test_flush_hands_over_records_and_next_offsets() -> None:
    batcher = MicroBatcher(10, 1.0, clock=Clock())
    for r in [rec(0, 5), rec(1, 2), rec(0, 6), rec(2, 9, topic="other")]:
        batcher.add(r)
    batch = batcher.flush()
    assert [r.offset for r in batch.records] == [5, 2, 6, 9]
    assert batch.offsets == {("ev", 0): 7, ("ev", 1): 3, ("other", 2): 10}
    assert len(batcher) == 0 and batcher.time_left() is None
    assert len(batcher.flush()) == 0


def test_drop_partitions_keeps_the_others() -> None:
    batcher = MicroBatcher(10, 1.0, clock=Clock())
    for r in [rec(0, 1), rec(1, 1), rec(0, 2)]:
        batcher.add(r)
    assert batcher.drop_partitions({("ev", 0)}) == 2
    assert [r.partition for r in batcher.flush().records] == [1]


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(0, 1.0)
    with pytest.raises(ValueError):
        MicroBatcher(1, -1.0)


def test_ingest_time_from_kafka_timestamp_else_poll_time() -> None:
    class Record:
        topic, partition, offset, key, value, headers = "ev", 0, 3, b"k", b"v", [("h", b"x")]
        timestamp = 1_700_000_000_500

    with_ts = InputRecord.from_consumer_record(Record(), polled_at=5.0)
    assert with_ts.ingested_at == 1_700_000_000.5 and with_ts.headers == (("h", b"x"),)
    Record.timestamp = -1
    assert InputRecord.from_consumer_record(Record(), polled_at=5.0).ingested_at == 5.0
    assert with_ts.source == "ev/0/3"


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000)), max_size=50))
def test_committed_offset_is_past_every_record(pairs: list[tuple[int, int]]) -> None:
    records = [rec(p, o) for p, o in pairs]
    offsets = next_offsets(records)
    for r in records:
        assert offsets[("ev", r.partition)] > r.offset
    assert set(offsets) == {("ev", p) for p, _ in pairs}


def test_adaptive_batch_is_due_once_the_source_is_drained() -> None:
    clock = Clock()
    batcher = MicroBatcher(100, 10.0, adaptive=True, clock=clock)
    batcher.drained()  # an empty poll: nothing to hand over, nothing armed
    batcher.add(rec(0, 0))
    assert not batcher.due()  # more may be buffered: this poll is not over
    batcher.add(rec(0, 1))
    batcher.drained()  # the poll returned fewer records than asked for
    assert batcher.due() and batcher.time_left() == 0.0
    assert [r.offset for r in batcher.flush().records] == [0, 1]
    batcher.add(rec(0, 2))  # a new batch waits for its own poll to drain
    assert not batcher.due()


def test_fixed_wait_batch_ignores_drained() -> None:
    clock = Clock()
    batcher = MicroBatcher(100, 0.02, adaptive=False, clock=clock)
    batcher.add(rec(0, 0))
    batcher.drained()
    assert not batcher.due()
    clock.now += 0.021
    assert batcher.due()


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30))
def test_adaptive_batches_follow_the_polls(polls: list[int]) -> None:
    """Each poll returns up to ``room`` records; a short poll closes the batch. Batches
    never exceed max_events and every record is handed over exactly once, in order."""
    batcher = MicroBatcher(16, 10.0, adaptive=True, clock=Clock())
    sent = 0
    handed: list[int] = []
    for size in polls:
        room = batcher.room
        taken = min(size, room)
        for _ in range(taken):
            batcher.add(rec(0, sent))
            sent += 1
        if taken < room:
            batcher.drained()
        if batcher.due():
            batch = batcher.flush()
            assert 0 < len(batch) <= 16
            handed.extend(r.offset for r in batch.records)
    handed.extend(r.offset for r in batcher.flush().records)
    assert handed == list(range(sent))


def test_costly_records_make_smaller_batches() -> None:
    batcher = MicroBatcher(2048, 10.0, adaptive=True, max_batch_s=1.0, clock=Clock())
    assert batcher.limit == 2048
    batcher.processed(2048, 0.2)  # cheap records: the limit stays at max_events
    batcher.processed(10, 0.5)  # a small batch, however slow per record, changes nothing
    assert batcher.limit == 2048
    batcher.processed(2048, 20.0)  # 10 ms a record (new texts on a CPU encoder)
    assert batcher.limit == 102  # what fits in a second at that cost
    for _ in range(3):
        batcher.add(rec(0, 0))
    assert batcher.room == 99
    batcher.processed(102, 0.3)  # full and well within the budget: room to grow
    assert batcher.limit == 204
    batcher.processed(50, 0.1)  # not full: no evidence that more would fit
    assert batcher.limit == 204
    batcher.processed(1, 60.0)  # however slow, a batch holds at least one record
    assert batcher.limit == 1
    for _ in range(20):
        batcher.processed(batcher.limit, 0.01)
    assert batcher.limit == 2048  # back to max_events, never above
    fixed = MicroBatcher(64, 10.0, clock=Clock())
    fixed.processed(10, 100.0)
    assert fixed.limit == 64  # no max_batch_s: only max_events


def test_records_added_at_once_make_the_batch_adding_them_one_by_one_makes() -> None:
    """What a poll returned goes in at once: the same records in order, the wait counted
    from the first poll that brought any, due when full."""
    clock = Clock()
    at_once, one_by_one = MicroBatcher(4, 0.02, clock=clock), MicroBatcher(4, 0.02, clock=clock)
    at_once.extend([])
    assert at_once.time_left() is None
    first = [rec(0, 0), rec(1, 0)]
    at_once.extend(first)
    for r in first:
        one_by_one.add(r)
    clock.now += 0.015
    second = [rec(0, 1), rec(1, 1)]
    at_once.extend(second)
    for r in second:
        one_by_one.add(r)
    assert at_once.due() and one_by_one.due() and at_once.full
    assert at_once.time_left() == one_by_one.time_left() == 0.0
    batch = at_once.flush()
    assert batch == one_by_one.flush()
    assert [(r.partition, r.offset) for r in batch.records] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_wait_counts_from_the_first_records_added_at_once() -> None:
    clock = Clock()
    batcher = MicroBatcher(100, 0.02, clock=clock)
    batcher.extend([rec(0, 0)])
    clock.now += 0.015
    batcher.extend([rec(0, 1)])
    assert batcher.time_left() == pytest.approx(0.005)
