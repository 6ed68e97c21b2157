"""The read-your-writes barrier against a log that hides the tail of its last batch.

``HidingLog`` behaves as the embedded broker is documented to (docs/GUARANTEES.md):
end offsets, fetches and the high watermark stop at the first record of the last batch
written to a partition until another batch lands there. Without the barrier a
:class:`StateReader` restores a user's older state; with it, the newest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from consumers.barrier import BARRIER_KEY, is_barrier, passed_barrier, place_barriers
from consumers.state_store import StateReader
from interest_core.records import Rejected, parse_catalog, parse_event
from interest_core.settings import Settings

SETTINGS = Settings().replace(
    topics={"events_partitions": 1, "state_partitions": 1}, state={"restore_timeout_s": 5}
)
STATE = TopicPartition(SETTINGS.topics.state, 0)


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int = 0


class HidingLog:
    """One partition; ``visible_end`` is the first record of the last batch, plus one."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.last_batch_base = -1

    def write_batch(self, pairs: list[tuple[bytes | None, bytes | None]]) -> list[int]:
        base = len(self.records)
        for i, (key, value) in enumerate(pairs):
            self.records.append(Record(key, value, base + i))
        self.last_batch_base = base
        return [base + i for i in range(len(pairs))]

    @property
    def visible_end(self) -> int:
        return self.last_batch_base + 1


class _Future:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def get(self, timeout: float | None = None) -> _Future:
        return self


class HidingProducer:
    """Every send is a one-record batch (as a producer waiting for each ack)."""

    def __init__(self, log: HidingLog) -> None:
        self.log = log

    def send(self, topic: str, key: bytes | None = None, value: Any = None, partition: int = 0):
        return _Future(self.log.write_batch([(key, value)])[0])

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class HidingConsumer:
    def __init__(self, log: HidingLog) -> None:
        self.log = log
        self.position_ = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.position_ = 0

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int = 0) -> dict:
        return {tp: self.log.visible_end for tp in tps}

    def highwater(self, tp: TopicPartition) -> int:
        return self.log.visible_end

    def position(self, tp: TopicPartition) -> int:
        return self.position_

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict:
        out = self.log.records[self.position_ : self.log.visible_end]
        self.position_ += len(out)
        return {STATE: out} if out else {}

    def close(self, autocommit: bool = False) -> None:
        pass


def reader(log: HidingLog, *, barrier: bool) -> StateReader:
    return StateReader(
        SETTINGS,
        consumer_factory=lambda *a, **k: HidingConsumer(log),
        producer_factory=lambda *a, **k: HidingProducer(log),
        barrier=barrier,
    )


def hidden_tail_log() -> HidingLog:
    log = HidingLog()
    log.write_batch([(b"u1", b"v1"), (b"u2", b"w1")])
    log.write_batch([(b"u1", b"v2"), (b"u1", b"v3"), (b"u2", b"w2")])  # v3, w2 hidden
    return log


def test_without_the_barrier_the_hidden_tail_makes_the_restore_stale() -> None:
    entries = reader(hidden_tail_log(), barrier=False).read()
    assert entries["u1"].blob == b"v2"  # the failure the barrier exists for
    assert entries["u2"].blob == b"w1"


def test_the_barrier_restores_the_newest_state_and_skips_markers() -> None:
    log = hidden_tail_log()
    state = reader(log, barrier=True)
    entries = state.read()
    assert {u: e.blob for u, e in entries.items()} == {"u1": b"v3", "u2": b"w2"}
    assert state.last_read_records == 5
    assert state.read(users=["u1"])["u1"].blob == b"v3"  # a second marker: still skipped
    assert sum(1 for r in log.records if is_barrier(r.key)) == 2


def test_place_barriers_returns_each_markers_offset() -> None:
    log = hidden_tail_log()
    offsets = place_barriers(HidingProducer(log), "t", [0, 0], timeout_s=1)
    assert offsets == {0: 5}
    consumer = HidingConsumer(log)
    assert not passed_barrier(consumer, STATE, 5)
    consumer.poll()
    assert passed_barrier(consumer, STATE, 5)


def test_the_marker_key_is_never_a_user_or_an_item() -> None:
    event = parse_event({"user_id": BARRIER_KEY.decode(), "ts": 1.0, "type": "search", "text": "x"})
    assert isinstance(event, Rejected)
    assert isinstance(parse_catalog(BARRIER_KEY, None), Rejected)
    assert is_barrier(BARRIER_KEY) and not is_barrier(b"u1") and not is_barrier(None)
