"""Where a micro-batch's records go: the records, the plan, and the Kafka sink.

A :class:`PublishPlan` is what one batch publishes (dead letters, state, then
recommendations) and the offsets to commit once it is acknowledged. A :class:`Sink`
takes the records (``send``) and confirms them (``flush``); :class:`KafkaSink` does it
with a kafka-python producer. The memory sink for tests is :class:`consumers.testing.MemorySink`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumers.bounded import PublishError

__all__ = ["KafkaSink", "OutgoingRecord", "PublishError", "PublishPlan", "Sink"]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to publish; ``value`` None is a tombstone."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class PublishPlan:
    """What one micro-batch publishes, and the offsets to commit after it is flushed.

    ``offsets`` maps ``(topic, partition)`` to the next offset to read. ``event_times``,
    ``ingest_times`` and ``polled_times`` (unix seconds) are those of the valid events,
    for latency; ``started_at`` / ``processed_at`` (unix seconds) bound the processing.
    """

    records_in: int = 0
    dead_letters: list[OutgoingRecord] = field(default_factory=list)
    states: list[OutgoingRecord] = field(default_factory=list)
    recommendations: list[OutgoingRecord] = field(default_factory=list)
    #: Item signals of the applied events (interest.item-signals): acknowledged before
    #: the states are sent (see :meth:`consumers.step.BatchStep.held_records`).
    signals: list[OutgoingRecord] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    event_times: list[float] = field(default_factory=list)
    ingest_times: list[float] = field(default_factory=list)
    polled_times: list[float] = field(default_factory=list)
    duplicates: int = 0
    started: float = 0.0  # perf_counter at the start of processing
    started_at: float = 0.0  # unix seconds, the same instant
    processed_at: float = 0.0  # unix seconds, end of processing
    encode_s: float = 0.0
    #: CPU seconds of the processing thread between ``started_at`` and ``processed_at``
    #: (less than that span when it waited for a core or the interpreter lock).
    process_cpu_s: float = 0.0

    @property
    def outgoing(self) -> list[OutgoingRecord]:
        """Every record to send: dead letters, recommendations, then user states.

        States go last: the producer sends in this order on one connection per broker,
        so a state on the state topic means its batch's recommendations were sent before
        it. A crash in between re-publishes a version (GUARANTEES 3); the other order
        would lose one (state persisted, recommendation not).
        """
        return [*self.dead_letters, *self.recommendations, *self.states]

    @property
    def tombstones(self) -> int:
        return sum(1 for r in self.states if r.value is None) + sum(
            1 for r in self.recommendations if r.value is None
        )


class Sink(Protocol):
    """Where planned records go: ``send`` each (raises for a record it refuses outright,
    e.g. too large), then ``flush`` (raises :class:`PublishError` listing the failed).

    ``reaches_broker``: a successful ``flush`` means Kafka acknowledged the records (the
    worker's readiness counts it as a round trip). ``acked_at``: the unix time of the
    latest acknowledgement the sink saw (0.0 when it has none or does not know), so a
    flight whose flush is awaited late is still timed at its acknowledgement.
    """

    reaches_broker: bool
    acked_at: float

    def send(self, record: OutgoingRecord) -> None: ...

    def flush(self) -> None: ...


class KafkaSink:
    """Sends through a kafka-python producer; ``flush`` raises :class:`PublishError`.

    ``acked_at`` is the unix time of the latest acknowledgement (set on the producer's
    IO thread), so a batch whose flush is awaited late is still timed at its ack.
    """

    reaches_broker = True

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._futures: list[tuple[OutgoingRecord, Any]] = []
        self.acked_at = 0.0

    def _acked(self, _metadata: Any) -> None:
        self.acked_at = time.time()

    def send(self, record: OutgoingRecord) -> None:
        """Queue ``record``; raises ``MessageSizeTooLargeError`` when the producer refuses it."""
        future = self.producer.send(
            record.topic, key=record.key, value=record.value, headers=list(record.headers)
        )
        future.add_callback(self._acked)
        self._futures.append((record, future))

    def acknowledged(self) -> bool:
        """True when every record sent since the last flush has its answer (or failed)."""
        return all(future.is_done for _, future in self._futures)

    def flush(self) -> None:
        self.producer.flush()
        futures, self._futures = self._futures, []
        failed = [(record, f.exception) for record, f in futures if f.failed()]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(futures)} records not delivered: {failed[0][1]}", failed
            )
