"""The worker's read-ahead: records of an order that no longer holds are never taken.

The test plays the child's end of the pipe; the group consumer is a fake that owns the
partitions it is told and answers committed offsets and positions."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from consumers.read_ahead import ReaderError, ReaderSource

TOPIC = "interest.events"


class GroupConsumer:
    def __init__(self, owned: set[int], committed: dict[int, int]) -> None:
        self.owned = owned
        self.committed_at = committed
        self.paused: set[int] = set()
        self.fetched: dict[TopicPartition, list[Any]] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self.owned}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        fetched, self.fetched = self.fetched, {}
        return fetched

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= {tp.partition for tp in tps}

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return self.committed_at.get(tp.partition)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return 0  # nothing committed: the reset policy (earliest)


def _rows(partition: int, offsets: range) -> list[tuple[Any, ...]]:
    return [(partition, o, b"u", b"{}", 1_700_000_000.0 + o, ()) for o in offsets]


@dataclass
class Rig:
    """A reader source over a group consumer; the test plays the child (``child``) and
    the worker's residency (``owns``, ``restoring``: sets it may change)."""

    consumer: GroupConsumer
    owns: set[int]
    restoring: set[int] = field(default_factory=set)
    drops: list[int] = field(default_factory=list)  # what the worker's metric is told
    child: Any = field(init=False)
    source: ReaderSource = field(init=False)

    def __post_init__(self) -> None:
        here, self.child = multiprocessing.Pipe()
        self.source = ReaderSource(
            self.consumer,
            TOPIC,
            here,
            readable=lambda: self.owns - self.restoring,
            on_dropped=self.drops.append,
        )
        self.source.assigned(self.owns, self.owns)


def _setup(owned: set[int], committed: dict[int, int], restoring: set[int] | None = None) -> Rig:
    """The group consumer and the worker own ``owned``; ``restoring`` wait for users."""
    return Rig(GroupConsumer(owned, committed), set(owned), set(restoring or ()))


def _order(child: Any) -> tuple[int, dict[int, int]]:
    """The next order to the child (what the worker says of its own state skipped)."""
    while True:
        assert child.poll(1.0), "no order sent"
        message = child.recv()
        if message[0] != "waiting":
            break
    kind, epoch, offsets = message
    assert kind == "read"
    return epoch, offsets


def _offsets(records: list[Any]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


def test_records_read_ahead_for_an_old_order_are_never_taken() -> None:
    rig = _setup({0, 1}, {0: 5})
    consumer, source, child = rig.consumer, rig.source, rig.child
    assert consumer.paused == {0, 1}  # the group consumer fetches nothing itself
    assert source.poll(0, 10) == ([], True)
    assert _order(child) == (1, {0: 5, 1: 0})  # committed offset, else the position

    child.send(("records", 1, 1.0, _rows(0, range(5, 10)), {0: 10}))
    taken, drained = source.poll(100, 3)
    assert _offsets(taken) == [(0, 5), (0, 6), (0, 7)] and not drained
    assert taken[0].ingested_at == 1_700_000_005.0
    assert taken[0].polled_at == 1.0

    # Partition 1 is revoked: a new order reads partition 0 from after the last record
    # taken (8), not from where the child had read to (10). Under the eager protocol the
    # group consumer still lists partition 1 until the next assignment: its users are
    # gone from the worker, so it is not read.
    rig.owns.discard(1)
    source.released({1})
    child.send(("records", 1, 2.0, _rows(0, range(10, 12)), {0: 12}))  # read for order 1
    assert source.poll(0, 10) == ([], True)
    assert _order(child) == (3, {0: 8})  # a revoke voids the order at once: epoch 2
    child.send(("records", 3, 3.0, _rows(0, range(8, 11)), {0: 12}))
    taken, drained = source.poll(100, 10)
    assert _offsets(taken) == [(0, 8), (0, 9), (0, 10)] and drained
    assert rig.drops == [2, 2]  # 8 and 9 held back, 10 and 11 of the old order
    assert source.positions() == {0: 11}
    assert source.highwaters() == {0: 12}


def test_a_partition_is_read_only_once_restored() -> None:
    rig = _setup({0, 1}, {0: 3, 1: 7}, restoring={1})
    source, child = rig.source, rig.child
    source.poll(0, 10)
    assert _order(child) == (1, {0: 3})
    child.send(("records", 1, 1.0, _rows(0, range(3, 5)), {}))
    assert _offsets(source.poll(100, 10)[0]) == [(0, 3), (0, 4)]
    rig.restoring.clear()
    source.resume([1])
    source.poll(0, 10)
    assert _order(child) == (2, {0: 5, 1: 7})


def test_a_record_the_group_consumer_fetches_is_paused_and_left_to_the_reader() -> None:
    rig = _setup({0}, {0: 0})
    consumer, source, child = rig.consumer, rig.source, rig.child
    consumer.paused.clear()  # say the pause was lost
    consumer.fetched = {TopicPartition(TOPIC, 0): ["a record"]}
    assert source.poll(0, 10) == ([], True)
    assert consumer.paused == {0}
    assert _order(child) == (1, {0: 0})


def test_a_reader_that_fails_or_dies_fails_the_loop() -> None:
    rig = _setup({0}, {0: 0})
    source, child = rig.source, rig.child
    source.poll(0, 10)
    child.send(("error", "KafkaError: broken"))
    with pytest.raises(ReaderError, match="KafkaError: broken"):
        source.poll(100, 10)
    child.close()
    with pytest.raises(ReaderError):
        source.poll(100, 10)


def test_the_child_is_told_when_the_worker_waits_for_records_and_when_it_is_busy() -> None:
    rig = _setup({0}, {0: 0})
    source, child = rig.source, rig.child
    source.poll(0, 10)
    assert _order(child) == (1, {0: 0})
    assert not child.poll(0.05)  # waiting from the start: nothing to say
    child.send(("records", 1, 1.0, _rows(0, range(3)), {}))
    assert len(source.poll(100, 10)[0]) == 3
    assert child.recv() == ("waiting", False)  # busy with a batch: read at its pace
    assert source.poll(0, 10) == ([], True)
    assert child.recv() == ("waiting", True)  # nothing left: read at once
    assert source.poll(0, 10) == ([], True)
    assert not child.poll(0.05)  # told once per change


def test_nothing_read_for_a_void_order_is_taken_while_the_next_cannot_be_sent() -> None:
    rig = _setup({0, 1}, {0: 0, 1: 0})
    consumer, source, child = rig.consumer, rig.source, rig.child
    source.poll(0, 10)
    assert _order(child) == (1, {0: 0, 1: 0})
    rig.owns.discard(1)
    source.released({1})

    def no_broker(tp: TopicPartition, timeout_ms: int | None = None) -> int:
        raise KafkaTimeoutError("no answer")

    consumer.committed = no_broker  # type: ignore[method-assign]
    consumer.owned = {0, 2}  # the next round gave partition 2, whose offset is unknown
    rig.owns.add(2)
    child.send(("records", 1, 1.0, _rows(0, range(0, 2)) + _rows(1, range(0, 2)), {}))
    assert source.poll(100, 10)[0] == []  # read for the void order: dropped
    assert rig.drops == [4]
    assert not child.poll(0.05)  # no order could be sent yet
