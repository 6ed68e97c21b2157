"""The worker's Kafka producer in a process of its own.

A worker is one Python process, bound by its interpreter lock (docs/RESULTS.md, issue 14):
kafka-python's producer took a fifth of the worker thread (``KafkaProducer.send``, about
18 us per record, and its wake-up of the network thread) and its network thread another
sixth of the lock. A batch publishes a record per touched user (state, recommendation)
and one per item its events touched (item signals): far more records than events when
batches are small. :class:`ProcessSink` is a :class:`~consumers.sinks.Sink` whose
producer runs in a child process: the worker hands it a batch's records in one message
through a pipe and reads the answers back, so the per-record work and the network thread
run on another core, under another lock.

Same contract as :class:`~consumers.sinks.KafkaSink`, which the pipeline relies on:

- records are sent in the order given (one message per flight, one producer, sent in
  order by the child), so "recommendations before states" and "states after their
  events' signals are acknowledged" hold as before;
- ``send`` refuses a record too large for the producer at once
  (``MessageSizeTooLargeError``, the same size estimate as kafka-python's);
- ``acknowledged`` says whether everything sent has its answer; ``flush`` waits for it
  and raises :class:`~consumers.bounded.PublishError` naming each record that failed,
  with the producer's error (rebuilt from its class name in :mod:`kafka.errors`);
- a publisher process that died, or does not answer within ``delivery_timeout_s``, fails
  the batch (``PublishError`` for all its records: the worker stops and is restarted;
  nothing was committed, so the batch is re-read).

If the worker dies, the child sees the pipe close, delivers what it was already given
(what the worker's own producer thread would have sent too) and exits. The child ignores
SIGINT and SIGTERM: sent to the worker's process group (Ctrl-C), they are the worker's to
handle, and it still publishes its last batch through the child before closing it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import kafka.errors
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.record.default_records import DefaultRecordBatchBuilder

from consumers.bounded import PublishError
from consumers.sinks import OutgoingRecord
from interest_core.settings import Settings

__all__ = ["ProcessSink"]

log = logging.getLogger(__name__)

#: Seconds the child may take to start (import kafka-python, reach the broker).
START_TIMEOUT_S = 60.0

# One record on the pipe: (topic, key, value, headers).
_Wire = tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


def _error_of(name: str, message: str) -> BaseException:
    """The producer's error, rebuilt from its class name (``KafkaError`` if unknown)."""
    kind = getattr(kafka.errors, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except TypeError:
            pass
    return KafkaError(f"{name}: {message}")


class ProcessSink:
    """A :class:`~consumers.sinks.Sink` whose kafka-python producer runs in a child
    process (``producer_kwargs`` go to :func:`producers.kafka_client.make_producer`).
    ``acked_at`` is the unix time of the latest acknowledgement, as the child saw it."""

    reaches_broker = True

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "publisher",
        delivery_timeout_s: float = 150.0,
        **producer_kwargs: Any,
    ) -> None:
        self.max_request_size = int(producer_kwargs.get("max_request_size", 1_048_576))
        self.delivery_timeout_s = delivery_timeout_s
        self.acked_at = 0.0
        self._pending: list[OutgoingRecord] = []
        self._shipped: dict[int, list[OutgoingRecord]] = {}  # message -> its records
        self._answers: dict[int, list[tuple[int, str, str]]] = {}  # message -> failures
        self._next = 0
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, settings, producer_kwargs),
            name=f"{name}-{os.getpid()}",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._expect_ready(name)

    def _expect_ready(self, name: str) -> None:
        if not self._conn.poll(START_TIMEOUT_S):
            self.close(0.0)
            raise PublishError(f"{name}: the publisher process did not start")
        try:
            answer = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close(0.0)
            raise PublishError(f"{name}: the publisher process died while starting") from exc
        if answer[0] != "ready":
            self.close(0.0)
            raise PublishError(f"{name}: the publisher process failed to start: {answer[1]}")

    @property
    def alive(self) -> bool:
        """Whether the child process runs."""
        return self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    # ------------------------------------------------------------------ the Sink

    def send(self, record: OutgoingRecord) -> None:
        """Queue ``record``; raises ``MessageSizeTooLargeError`` when the producer would
        refuse it (kafka-python's own size estimate)."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
            record.key, record.value, list(record.headers)
        )
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the"
                " maximum request size you have configured with the max_request_size"
                " configuration"
            )
        self._pending.append(record)

    def acknowledged(self) -> bool:
        """True when every record sent so far has its answer (delivered or failed)."""
        self._ship()
        self._read(0.0)
        return len(self._answers) == len(self._shipped)

    def flush(self) -> None:
        """Wait for every record sent so far; raises :class:`PublishError` naming those
        that failed (or all of them, when the publisher process is gone)."""
        self._ship()
        deadline = time.monotonic() + self.delivery_timeout_s
        while len(self._answers) < len(self._shipped):
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishError(
                    f"the publisher process answered {len(self._answers)} of"
                    f" {len(self._shipped)} messages in {self.delivery_timeout_s:.0f} s"
                )
            self._read(min(left, 1.0))
        shipped, answers = self._shipped, self._answers
        self._shipped, self._answers = {}, {}
        failed = [
            (shipped[message][index], _error_of(kind, text))
            for message, failures in answers.items()
            for index, kind, text in failures
        ]
        sent = sum(len(records) for records in shipped.values())
        if failed:
            raise PublishError(
                f"{len(failed)} of {sent} records not delivered: {failed[0][1]}", failed
            )

    # ------------------------------------------------------------------ the pipe

    def _ship(self) -> None:
        """Hand the records queued since the last call to the child, in one message."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        message = self._next
        self._next += 1
        wire: list[_Wire] = [(r.topic, r.key, r.value, r.headers) for r in records]
        try:
            self._conn.send((message, wire))
        except (OSError, ValueError) as exc:
            raise self._gone("send to") from exc
        self._shipped[message] = records

    def _read(self, timeout_s: float) -> None:
        """Take the answers that arrived (waiting up to ``timeout_s`` for the first)."""
        try:
            while self._conn.poll(timeout_s):
                message, acked_at, failures = self._conn.recv()
                self._answers[message] = failures
                self.acked_at = max(self.acked_at, acked_at)
                timeout_s = 0.0
        except (EOFError, OSError) as exc:
            raise self._gone("read from") from exc
        if not self._process.is_alive() and len(self._answers) < len(self._shipped):
            raise self._gone("wait for")

    def _gone(self, verb: str) -> PublishError:
        code = self._process.exitcode
        return PublishError(
            f"cannot {verb} the publisher process (pid {self._process.pid}, exit code {code})"
        )

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to deliver what it holds and exit; stop it after ``timeout``."""
        with contextlib.suppress(OSError, ValueError):  # already gone
            self._conn.send(None)
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        self._conn.close()


# ---------------------------------------------------------------------- the child


class _Message:
    """One message's records in the producer: answers the parent when all have one."""

    def __init__(self, number: int, count: int, answer: Any) -> None:
        self.number = number
        self.left = count
        self.failures: list[tuple[int, str, str]] = []
        self.answer = answer
        self.lock = threading.Lock()

    def sealed(self) -> None:
        """All records are with the producer (answers may already have come)."""
        self._done(None, None)

    def delivered(self, _metadata: Any) -> None:
        self._done(None, None)

    def failed(self, index: int, error: BaseException) -> None:
        self._done(index, error)

    def _done(self, index: int | None, error: BaseException | None) -> None:
        with self.lock:
            if error is not None and index is not None:
                self.failures.append((index, type(error).__name__, str(error)[:500]))
            self.left -= 1
            finished = self.left == 0
        if finished:
            self.answer((self.number, time.time(), sorted(self.failures)))


def _serve(conn: Any, settings: Settings, producer_kwargs: dict[str, Any]) -> None:
    """The child: a producer that sends each message's records in order and answers
    ``(message, acknowledged at, [(index, error class, error text)])`` when all have an
    answer. ``None`` (or the pipe closing) ends it after delivering what it holds."""
    from producers.kafka_client import make_producer

    # Ctrl-C or a SIGTERM sent to the worker's process group is the worker's to handle (it
    # finishes its batch through this process, then closes the pipe): not this one's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        producer = make_producer(settings, **producer_kwargs)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    lock = threading.Lock()  # answers come from the producer's thread and this one

    def answer(reply: Any) -> None:
        with lock, contextlib.suppress(OSError, ValueError):  # the parent is gone
            conn.send(reply)

    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                break  # the worker is gone: deliver what was given, then stop
            if request is None:
                break
            number, records = request
            # one extra count for sealed(): the answer waits until every record is handed
            message = _Message(number, len(records) + 1, answer)
            for index, (topic, key, value, headers) in enumerate(records):
                try:
                    future = producer.send(topic, key=key, value=value, headers=list(headers))
                except Exception as exc:  # refused before the wire (size, metadata)
                    message.failed(index, exc)
                    continue
                future.add_callback(message.delivered)
                future.add_errback(functools.partial(message.failed, index))
            message.sealed()
            # A message is a whole flight, and the worker lands a flight before it sends
            # the next: nothing more will join these records, so they go out now instead
            # of after the producer's linger (5 ms of every batch's ingest -> publish).
            # flush() returns once each record has its answer (acknowledged or failed:
            # failures reach the parent through the errbacks above); a message sent
            # meanwhile waits in the pipe, in order.
            producer.flush()
    finally:
        producer.flush(timeout=30)
        producer.close(timeout=10)
