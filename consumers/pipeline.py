"""The worker's publish/commit pipeline: one flight of records in the air.

A *flight* is what the worker hands the producer in one go after processing a batch:
that batch's first records (:meth:`BatchStep.first_records`: item signals, dead
letters, recommendations) and the states the previous batch held back until its own
first records were acknowledged (:meth:`BatchStep.held_records`: with item signals, a
state may not be sent before its events' signals are acknowledged). The flight is not
awaited: the next batch is polled and processed while the broker answers, and the flight
*lands* (its acknowledgements are awaited, refusals retried) just before the next one is
sent, or as soon as it is acknowledged when the worker is idle. When it lands, the batch
whose first records it carried is published (metrics, the latency hook: recommendations
are out) and the batches whose last records it carried are committed. So a batch's
offsets are committed only after all of its records are acknowledged, its states after
its signals, and the worker never waits on a round trip while it has work in hand.

The commit is asynchronous (its answer is read by a later poll) except at stop; from the
rebalance listener (on the consumer's IO thread, where blocking consumer calls are
refused) it is always asynchronous. The pipeline also keeps the first offset per
partition of the batch in hand, for the crash report.

The worker owns the clients (the sink and the events consumer) and hands them in on
each call, so a test may swap either on the worker (see
``tests/pipeline/test_worker_publish_order.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.batching import InputRecord
from consumers.bounded import Delivery
from consumers.probes import WorkerProbes
from consumers.sinks import OutgoingRecord, PublishPlan, Sink
from consumers.step import BatchStep

__all__ = ["PublishPipeline"]

log = logging.getLogger(__name__)


@dataclass
class Flight:
    """Records handed to the sink together and not yet acknowledged."""

    delivery: Delivery[OutgoingRecord]
    sent_at: float  # unix seconds when handed over
    send_s: float  # seconds spent handing the records over
    #: The batch whose first records are aboard (published when the flight lands).
    publishes: PublishPlan | None = None
    #: The batches whose last records are aboard (committed when the flight lands).
    commits: list[PublishPlan] = field(default_factory=list)


class PublishPipeline:
    """Sends each batch's records in flights (see the module), publishes a batch when its
    first records are acknowledged and commits it when all of them are.

    ``step`` makes and settles the records; ``probes`` learns of commits (crash loops end);
    ``broker_ok`` is called after each successful Kafka round trip (readiness); ``name``
    prefixes the log lines (the worker id).
    """

    def __init__(
        self,
        step: BatchStep,
        probes: WorkerProbes,
        *,
        broker_ok: Callable[[], None],
        name: str,
    ) -> None:
        self.step = step
        self.probes = probes
        self.name = name
        self._broker_ok = broker_ok
        self.in_flight: Flight | None = None  # handed to the sink, not yet landed
        self.in_hand: dict[tuple[str, int], int] = {}  # first offset per partition, batch in hand

    def hold(self, records: Sequence[InputRecord]) -> None:
        """The batch now in hand is ``records`` (for the crash report)."""
        self.in_hand = {}
        for record in records:
            self.in_hand.setdefault((record.topic, record.partition), record.offset)

    def acknowledged(self, sink: Sink | None) -> bool:
        """True when ``sink`` has every answer for what it was sent (a sink that cannot
        tell, like ``MemorySink``, counts as acknowledged)."""
        acknowledged = getattr(sink, "acknowledged", None)
        return True if acknowledged is None else bool(acknowledged())

    def send(
        self, plan: PublishPlan | None, sink: Sink, consumer: Any, *, from_listener: bool = False
    ) -> None:
        """Land the flight in the air (acknowledged: publish, commit), then send ``plan``'s
        first records with the states the landed batch held back. From the rebalance
        listener everything is landed and committed before returning."""
        held = self._land(sink, consumer, from_listener=from_listener)
        self._take_off(held, plan, sink)
        if from_listener:
            self.complete(sink, consumer, from_listener=True)

    def advance(self, sink: Sink | None, consumer: Any) -> None:
        """The worker is idle and the flight is acknowledged: land it, and send at once
        the states it let go (landed on a later call)."""
        held = self._land(sink, consumer)
        if held is not None and sink is not None:
            self._take_off(held, None, sink)

    def complete(
        self, sink: Sink | None, consumer: Any, *, from_listener: bool = False, sync: bool = False
    ) -> None:
        """Land everything: the flight, then the states it let go (sent and awaited), so
        that every batch processed is acknowledged and committed.

        The commit is asynchronous (its answer is read by a later poll) unless ``sync``.
        Either way it is sent only after the batch's records are acknowledged."""
        held = self._land(sink, consumer, from_listener=from_listener, sync=sync)
        if held is not None and sink is not None:
            self._take_off(held, None, sink)
            self._land(sink, consumer, from_listener=from_listener, sync=sync)

    def _take_off(self, held: PublishPlan | None, plan: PublishPlan | None, sink: Sink) -> None:
        """Send ``held``'s states and ``plan``'s first records as one flight."""
        if held is None and plan is None:
            return
        records: list[OutgoingRecord] = []
        commits: list[PublishPlan] = []
        if held is not None:
            records += self.step.held_records(held)
            commits.append(held)
        if plan is not None:
            records += self.step.first_records(plan)
            if not self.step.held_records(plan):
                commits.append(plan)
        sent, sent_at = time.perf_counter(), time.time()
        delivery = self.step.send(records, sink)
        self.in_flight = Flight(
            delivery, sent_at, time.perf_counter() - sent, publishes=plan, commits=commits
        )

    def _land(
        self, sink: Sink | None, consumer: Any, *, from_listener: bool = False, sync: bool = False
    ) -> PublishPlan | None:
        """Wait for the flight's acknowledgements, publish the batch whose first records it
        carried, commit the batches it completed; returns the published batch when its
        states are still to be sent."""
        flight, self.in_flight = self.in_flight, None
        if flight is None or sink is None:
            return None
        waited = time.perf_counter()
        delivered = self.step.settle(flight.delivery, sink)  # PublishError: no commit
        if sink.reaches_broker:
            self._broker_ok()  # the producer's records were acknowledged
        plan = flight.publishes
        if plan is not None:
            self.step.published(
                plan,
                delivered,
                acked_at=_acknowledged_at(sink.acked_at, flight.sent_at),
                # the worker's own time: handing over, and this wait (not the next
                # batch's processing that the flight overlapped)
                publish_s=flight.send_s + (time.perf_counter() - waited),
            )
        self._commit(flight.commits, consumer, from_listener=from_listener, sync=sync)
        return plan if plan is not None and self.step.held_records(plan) else None

    def _commit(
        self,
        plans: Sequence[PublishPlan],
        consumer: Any,
        *,
        from_listener: bool = False,
        sync: bool = False,
    ) -> None:
        """Commit the offsets after ``plans`` (in processing order: the later ones win)."""
        if not plans or consumer is None:
            return
        merged: dict[tuple[str, int], int] = {}
        for plan in plans:
            merged.update(plan.offsets)
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in merged.items()
        }
        if not offsets:
            return
        if from_listener or not sync:
            # Blocking consumer calls are refused on the consumer's IO thread, where the
            # listener runs; the async commit is queued before the group re-join.
            consumer.commit_async(offsets, callback=self._committed)
            return
        try:
            consumer.commit(offsets)
            self._broker_ok()
            self.in_hand = {}
            past = self.probes.committed()
            if past is not None:
                log.info("%s: committed past the crash loop (%s)", self.name, past)
        except KafkaError as exc:
            # The state is already published: the next owner re-reads these events and
            # skips them by offset, so nothing is applied twice.
            log.warning("%s: offset commit failed (%s); events will be re-read", self.name, exc)

    def _committed(self, _offsets: Any, response: Any) -> None:
        """The answer to an asynchronous commit (read on the worker thread, in a poll)."""
        if isinstance(response, Exception):
            # The state is already published: the next owner re-reads these events and
            # skips them by offset, so nothing is applied twice.
            log.warning(
                "%s: offset commit failed (%s); events will be re-read", self.name, response
            )
            return
        self._broker_ok()
        past = self.probes.committed()
        if past is not None:
            log.info("%s: committed past the crash loop (%s)", self.name, past)


def _acknowledged_at(acked_at: float, sent_at: float) -> float:
    """Unix time at which a flight sent at ``sent_at`` was acknowledged: now, or the
    sink's last acknowledgement ``acked_at`` when the flight landed late."""
    now = time.time()
    if acked_at >= sent_at:
        return min(now, acked_at)
    return now
