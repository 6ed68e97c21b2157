"""Where the worker's events come from: its group consumer, or a reader process ahead of it.

kafka-python sends a partition's next fetch only at a poll, so the records a poll returns
are the ones that arrived before the previous batch was processed: every record waited a
whole batch more than it had to (docs/RESULTS.md, rounds 16-17). Polling on a thread of
the worker's own took the interpreter lock from the batch (round 17: the worker's rate
fell by 27-31 %). :class:`ReaderSource` polls in a child process instead, all the time,
and hands the records over a pipe; the worker's thread unpickles them (about 1.5 us a
record, against about 5.8 us for kafka-python's poll and decoding in the worker).

The group membership stays with the worker's consumer: the rebalance listener, the
commits (explicit offsets after the records processed) and the lag probes are unchanged.
That consumer's partitions are all paused, so it never fetches. The child owns no group:
it reads the partitions it is told, each from the offset it is told, and tags what it
sends with the *epoch* of that order. Every change of the partitions to read (assigned,
revoked, lost, restored) is a new epoch; records that arrive under an older one were read
ahead for an order that no longer holds and are dropped, never taken. A partition is read
again from the offset after the last record the worker took (or, new to the worker, from
its consumer's position: the group's committed offset), so nothing is skipped and nothing
taken twice. The pipe is the credit: the child blocks on a full pipe, so it reads at most
about a pipe (and one poll) ahead of the batches.

A child that dies or reports an error fails the worker's loop (:class:`ReaderError`): the
worker is restarted and re-reads from its commits, as after any crash.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Protocol

from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.batching import InputRecord
from consumers.group_membership import rebalancing
from interest_core.settings import Settings

__all__ = ["ConsumerSource", "EventSource", "ReaderError", "ReaderSource", "start_reader"]

log = logging.getLogger(__name__)

#: Seconds the child may take to start (import kafka-python, reach the broker).
START_TIMEOUT_S = 60.0
#: Seconds between the worker's group polls while the reader supplies the records: the
#: poll runs the group protocol (rebalance callbacks, commit answers); heartbeats have a
#: thread of their own.
GROUP_POLL_S = 0.05
#: Milliseconds a child's poll waits for records (its fetches wait ``fetch_max_wait_ms``
#: on the broker; this only bounds how late it reads a new order from the worker).
CHILD_POLL_MS = 20
#: Milliseconds the worker waits for the position of a partition new to it.
POSITION_TIMEOUT_MS = 5000

# One record on the pipe: (partition, offset, key, value, ingested at, headers), as
# InputRecord.from_consumer_record makes them in the child.
_Row = tuple[int, int, bytes | None, bytes | None, float, tuple[tuple[str, bytes], ...]]


class ReaderError(RuntimeError):
    """The reader process died, failed to start, or reported an error."""


class EventSource(Protocol):
    """What the worker's loop takes its events from."""

    def poll(self, timeout_ms: int, room: int) -> tuple[list[InputRecord], bool]:
        """Up to ``room`` records, waiting up to ``timeout_ms`` for the first; and whether
        nothing more is buffered (the batch is then due, see ``MicroBatcher.drained``)."""
        ...

    def assigned(self, partitions: Collection[int], new: Collection[int]) -> None:
        """The group gave the worker ``partitions``; ``new`` wait for their restore."""
        ...

    def released(self, partitions: Collection[int]) -> None:
        """``partitions`` were revoked or lost."""
        ...

    def resume(self, partitions: Collection[int]) -> None:
        """``partitions`` are restored: read them."""
        ...

    def positions(self) -> dict[int, int]:
        """The next offset to take per partition, where the group consumer's position
        does not say it (it does not fetch them)."""
        ...

    def highwaters(self) -> dict[int, int]:
        """The end of each partition as the last fetch of it saw it, where the group
        consumer's ``highwater`` does not say it."""
        ...

    def close(self) -> None: ...


class ConsumerSource:
    """The worker's group consumer polls its own records (``[consumer] read_ahead =
    false``): new partitions are paused until restored."""

    def __init__(self, consumer: Any, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic

    def poll(self, timeout_ms: int, room: int) -> tuple[list[InputRecord], bool]:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=room)
        now = time.time()
        make = InputRecord.from_consumer_record
        taken = [make(record, now) for records in polled.values() for record in records]
        return taken, len(taken) < room

    def assigned(self, partitions: Collection[int], new: Collection[int]) -> None:
        if new:
            self.consumer.pause(*(TopicPartition(self.topic, p) for p in new))

    def released(self, partitions: Collection[int]) -> None:
        return None

    def resume(self, partitions: Collection[int]) -> None:
        owned = set(self.consumer.assignment())
        tps = [tp for tp in (TopicPartition(self.topic, p) for p in partitions) if tp in owned]
        if tps:
            self.consumer.resume(*tps)

    def positions(self) -> dict[int, int]:
        return {}

    def highwaters(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        return None


class ReaderSource:
    """Records read ahead by a child process (see the module's docstring).

    ``conn`` is the worker's end of the pipe to the child (:func:`start_reader`);
    ``readable`` says which partitions the worker owns with their users restored: only
    those are read (under the eager protocol the group consumer's ``assignment()`` still
    lists revoked partitions until the next round assigns, and their users are gone).
    """

    def __init__(
        self,
        consumer: Any,
        topic: str,
        conn: Any,
        process: Any = None,
        *,
        readable: Callable[[], Collection[int]],
        on_dropped: Callable[[int], None] = lambda _count: None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self._conn = conn
        self._process = process
        self._readable = readable
        self._on_dropped = on_dropped
        self._next_group_poll = 0.0
        self.epoch = 0
        self._dirty = False
        self._reading: dict[int, int] = {}  # partition -> next offset to take
        self._highwater: dict[int, int] = {}
        self._ahead: deque[InputRecord] = deque()  # read, not yet taken (current epoch)
        self._waiting = True  # what the child was last told: the worker waits for records

    # ------------------------------------------------------------ the worker's loop

    def poll(self, timeout_ms: int, room: int) -> tuple[list[InputRecord], bool]:
        now = time.monotonic()
        if not self.consumer.assignment() or rebalancing(self.consumer):
            # A join round completes only inside a poll that waits for it (see
            # consumers.group_membership.group_poll_ms): the poll takes the time given.
            self._group_poll(timeout_ms)
            timeout_ms = 0
        elif now >= self._next_group_poll:
            self._next_group_poll = now + GROUP_POLL_S
            self._group_poll(0)
        if self._dirty:
            self._order()
        return self._read(timeout_ms, room)

    def _group_poll(self, timeout_ms: int) -> None:
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=1)
        if polled:  # a partition not paused: read by the child, never taken from here
            self.consumer.pause(*polled)
            log.error("read-ahead: the group consumer fetched %s; paused it", sorted(polled))

    def _order(self) -> None:
        """Tell the child which partitions to read from which offsets (a new epoch)."""
        owned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        wanted = sorted(owned & set(self._readable()))
        reading: dict[int, int] = {}
        try:
            for partition in wanted:
                offset = self._reading.get(partition)
                reading[partition] = self._start(partition) if offset is None else offset
        except KafkaError as exc:  # the broker did not answer: the next poll asks again
            log.warning("read-ahead: no position for the partitions to read (%s)", exc)
            return
        self._void()
        self._reading = reading
        self._send(("read", self.epoch, reading))
        self._dirty = False
        log.debug("read-ahead: epoch %d reads %s", self.epoch, reading)

    def _start(self, partition: int) -> int:
        """Where a partition new to the reader starts: the group's committed offset (the
        revoke that took it from this or another worker committed first), else the
        consumer's position (its reset policy). Not the position of a partition the
        group consumer held before: paused, it never moved past where it started."""
        tp = TopicPartition(self.topic, partition)
        committed = self.consumer.committed(tp, timeout_ms=POSITION_TIMEOUT_MS)
        if committed is not None:
            return int(committed)
        return int(self.consumer.position(tp, timeout_ms=POSITION_TIMEOUT_MS))

    def _read(self, timeout_ms: int, room: int) -> tuple[list[InputRecord], bool]:
        ahead = self._ahead
        taken = [ahead.popleft() for _ in range(min(room, len(ahead)))]
        wait = 0.0 if taken else timeout_ms / 1000.0
        while len(taken) < room and self._ready(wait):
            wait = 0.0
            records = self._receive()
            if records:
                space = room - len(taken)
                taken += records[:space]
                ahead.extend(records[space:])
        reading = self._reading
        for record in taken:  # in offset order within a partition
            reading[record.partition] = record.offset + 1
        drained = not ahead and not self._ready(0.0)
        waiting = drained and not taken
        if waiting is not self._waiting:  # the child reads at once, or at its pace
            self._waiting = waiting
            self._send(("waiting", waiting))
        return taken, drained

    def _void(self) -> None:
        """A new epoch: what was read under the last order will not be taken."""
        self.epoch += 1
        self._drop(len(self._ahead))
        self._ahead.clear()

    def _drop(self, count: int) -> None:
        if count:
            self._on_dropped(count)

    def _ready(self, wait: float) -> bool:
        try:
            return bool(self._conn.poll(wait))
        except (EOFError, OSError) as exc:
            raise ReaderError("the reader process is gone") from exc

    def _receive(self) -> list[InputRecord]:
        """One message from the child: its records, or none when of an older epoch."""
        try:
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise ReaderError(f"the reader process died ({self._exit_code()})") from exc
        if message[0] == "error":
            raise ReaderError(f"the reader process failed: {message[1]}")
        _, epoch, polled_at, rows, highwater = message
        if epoch != self.epoch:
            self._drop(len(rows))
            return []
        self._highwater.update(highwater)
        topic = self.topic
        return [
            InputRecord(topic, partition, offset, key, value, ingested_at, headers, polled_at)
            for partition, offset, key, value, ingested_at, headers in rows
        ]

    # ------------------------------------------------------------ partition changes

    def assigned(self, partitions: Collection[int], new: Collection[int]) -> None:
        if partitions:  # the group consumer fetches nothing: the child reads them
            self.consumer.pause(*(TopicPartition(self.topic, p) for p in partitions))
        self._dirty = True

    def released(self, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._reading.pop(partition, None)
            self._highwater.pop(partition, None)
        # What was read under the current order is void now, even if the next order
        # cannot be sent yet (no broker for a committed offset): their users are gone.
        self._void()
        self._dirty = True

    def resume(self, partitions: Collection[int]) -> None:
        self._dirty = True

    def positions(self) -> dict[int, int]:
        return dict(self._reading)

    def highwaters(self) -> dict[int, int]:
        return dict(self._highwater)

    # ------------------------------------------------------------ the child process

    def _send(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise ReaderError("the reader process is gone") from exc

    def _exit_code(self) -> str:
        code = getattr(self._process, "exitcode", None)
        return "still running" if code is None else f"exit code {code}"

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (it holds nothing to deliver)."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5.0)
        self._conn.close()


def start_reader(settings: Settings, *, client_id: str, name: str = "reader") -> tuple[Any, Any]:
    """Start the child reading ``settings.topics.events``; returns ``(conn, process)``
    once it is connected (:class:`ReaderError` if it does not start)."""
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    conn, child = context.Pipe()
    process = context.Process(
        target=_serve,
        args=(child, settings, client_id),
        name=f"{name}-{os.getpid()}",
        daemon=True,
    )
    process.start()
    child.close()
    try:
        if not conn.poll(START_TIMEOUT_S):
            raise ReaderError(f"{name}: the reader process did not start")
        answer = conn.recv()
    except (EOFError, OSError) as exc:
        raise ReaderError(f"{name}: the reader process died while starting") from exc
    except ReaderError:
        process.terminate()
        raise
    if answer[0] != "ready":
        process.join(5.0)
        raise ReaderError(f"{name}: the reader process failed to start: {answer[1]}")
    return conn, process


# ---------------------------------------------------------------------- the child


def _serve(conn: Any, settings: Settings, client_id: str) -> None:
    """The child: reads the partitions of the latest ``("read", epoch, {partition:
    offset})`` order and sends ``("records", epoch, polled at, rows, highwaters)`` per
    poll; ``("waiting", flag)`` says whether the worker waits for records (read at once)
    or is busy with a batch (read every ``consumer.read_ahead_pace_ms``); ``None`` or the
    pipe closing ends it."""
    from producers.kafka_client import make_consumer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    topic = settings.topics.events
    try:
        consumer = make_consumer(
            settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=client_id,
        )
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        pace_s = settings.consumer.read_ahead_pace_ms / 1000.0
        _read_loop(conn, consumer, topic, settings.batch.max_events, pace_s)
    except (EOFError, OSError, BrokenPipeError):
        pass  # the worker is gone
    except Exception as exc:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):
            consumer.close(autocommit=False)


def _read_loop(conn: Any, consumer: Any, topic: str, max_records: int, pace_s: float) -> None:
    """Poll and send until told to stop. While the worker is busy with a batch, polls
    start ``pace_s`` apart: each is a fetch the broker answers (the embedded broker's
    CPU fell from 0.79 to 0.45 of a core at 13k events/s with polls 30 ms apart,
    docs/RESULTS.md round 20), and records read sooner would only wait in the pipe. A
    worker waiting for records, or a poll that filled a batch, ends the pause."""
    epoch, owned = 0, list[TopicPartition]()
    waiting, next_poll = True, 0.0
    while True:
        wait = max(0.0, next_poll - time.monotonic())  # busy: at the pace
        if not owned or waiting:
            wait = 0.0 if owned else 0.2
        if conn.poll(wait):  # an order, or the worker's state: look again
            order = conn.recv()
            if order is None:
                return
            if order[0] == "waiting":
                waiting = order[1]
            else:
                _, epoch, offsets = order
                owned = [TopicPartition(topic, p) for p in sorted(offsets)]
                consumer.assign(owned)
                for tp in owned:
                    consumer.seek(tp, offsets[tp.partition])
            continue
        if not owned:
            continue
        next_poll = time.monotonic() + pace_s
        polled = consumer.poll(timeout_ms=CHILD_POLL_MS, max_records=max_records)
        if not polled:
            continue
        now = time.time()
        made = [InputRecord.from_consumer_record(r, now) for rs in polled.values() for r in rs]
        rows: list[_Row] = [
            (r.partition, r.offset, r.key, r.value, r.ingested_at, r.headers) for r in made
        ]
        ends = {tp.partition: consumer.highwater(tp) for tp in polled}
        conn.send(("records", epoch, now, rows, {p: e for p, e in ends.items() if e is not None}))
        if len(rows) >= max_records:
            next_poll = 0.0  # a backlog: read on at once
