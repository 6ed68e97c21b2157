"""Replay pacing (``--rate``, ``--speed``) on a fake clock: every send at its due time."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka.future import Future

from interest_core.settings import Settings
from producers.replay import replay, send_offset_s


class FakeClock:
    """Monotonic seconds that move only when slept (or when told to)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TimedProducer:
    """Stands in for KafkaProducer: notes the clock at each send; each send costs
    ``cost_s`` seconds of that clock."""

    def __init__(self, clock: FakeClock, cost_s: float = 0.0) -> None:
        self.clock = clock
        self.cost_s = cost_s
        self.sent: list[tuple[float, bytes | None]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> Future:
        self.sent.append((self.clock.now, value))
        self.clock.now += self.cost_s
        future = Future()
        future.success(None)
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass


def _log(tmp_path: Path, times: list[float]) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [
        orjson.dumps(
            {"event_id": f"e{i}", "user_id": "u1", "ts": ts, "type": "view", "item_id": "i1"}
        )
        for i, ts in enumerate(times)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _replay(path: Path, clock: FakeClock, producer: TimedProducer, **pace: float) -> list[float]:
    summary = replay(
        path,
        Settings(),
        producer=producer,  # type: ignore[arg-type]
        progress=False,
        clock=clock,
        sleep=clock.sleep,
        **pace,  # type: ignore[arg-type]
    )
    assert summary.sent == len(producer.sent) and summary.ok
    first = producer.sent[0][0]
    return [round(at - first, 9) for at, _ in producer.sent]


def test_rate_sends_the_nth_event_at_n_over_rate(tmp_path: Path) -> None:
    clock = FakeClock()
    offsets = _replay(_log(tmp_path, [0, 1, 1, 500, 501]), clock, TimedProducer(clock), rate=4.0)
    assert offsets == [0.0, 0.25, 0.5, 0.75, 1.0]  # event times do not matter at a rate


def test_speed_keeps_the_gaps_between_event_times(tmp_path: Path) -> None:
    clock = FakeClock()
    times = [100.0, 100.0, 110.0, 130.0, 190.0]
    offsets = _replay(_log(tmp_path, times), clock, TimedProducer(clock), speed=10.0)
    assert offsets == [0.0, 0.0, 1.0, 3.0, 9.0]


def test_no_pacing_never_sleeps(tmp_path: Path) -> None:
    clock = FakeClock()
    offsets = _replay(_log(tmp_path, [0, 50, 100]), clock, TimedProducer(clock))
    assert offsets == [0.0, 0.0, 0.0] and clock.slept == []


def test_a_slow_producer_is_not_slowed_further(tmp_path: Path) -> None:
    # Each send takes 0.5 s against a schedule of 0.25 s: behind schedule, never sleeps.
    clock = FakeClock()
    producer = TimedProducer(clock, cost_s=0.5)
    offsets = _replay(_log(tmp_path, [0, 1, 2, 3]), clock, producer, rate=4.0)
    assert offsets == [0.0, 0.5, 1.0, 1.5] and clock.slept == []


@pytest.mark.parametrize(
    ("index", "event_offset_s", "rate", "speed", "due"),
    [(8, 99.0, 4.0, None, 2.0), (8, 30.0, None, 2.0, 15.0), (8, 30.0, None, None, 0.0)],
)
def test_send_offset(
    index: int, event_offset_s: float, rate: float | None, speed: float | None, due: float
) -> None:
    assert send_offset_s(index, event_offset_s, rate, speed) == due
