"""The worker's publish/commit pipeline, one batch deep.

Batch N's records are sent (not awaited); before batch N+1 is sent, N's acknowledgements
are awaited and only then are N's offsets committed. The commit is asynchronous (its
answer is read by a later poll) except at stop; from the rebalance listener (on the
consumer's IO thread, where blocking consumer calls are refused) it is always
asynchronous. The pipeline also keeps the first offset per partition of the batch in
hand, for the crash report.

The worker owns the clients (the sink and the events consumer) and hands them in on
each call, so a test may swap either on the worker (see
``tests/pipeline/test_worker_publish_order.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.batching import InputRecord
from consumers.probes import WorkerProbes
from consumers.sinks import KafkaSink, PublishPlan, Sink
from consumers.step import BatchStep

__all__ = ["PublishPipeline"]

log = logging.getLogger(__name__)


class PublishPipeline:
    """Sends a batch's plan, then commits its offsets once its records are acknowledged.

    ``step`` sends and completes plans; ``probes`` learns of commits (crash loops end);
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
        self.in_flight: PublishPlan | None = None  # sent, not yet acknowledged nor committed
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
        """Finish the batch in flight (acknowledged, committed), then send ``plan`` (if
        any). From the rebalance listener ``plan`` is finished too."""
        self.complete(sink, consumer, from_listener=from_listener)
        if plan is None:
            return
        self.step.send(plan, sink)
        self.in_flight = plan
        if from_listener:
            self.complete(sink, consumer, from_listener=True)

    def complete(
        self, sink: Sink | None, consumer: Any, *, from_listener: bool = False, sync: bool = False
    ) -> None:
        """Wait for the in-flight batch's acknowledgements, then commit its offsets.

        The commit is asynchronous (its answer is read by a later poll) unless ``sync``:
        it no longer holds up the next poll by a round trip. Either way it is sent only
        after the batch's records are acknowledged."""
        plan, self.in_flight = self.in_flight, None
        if plan is None or sink is None:
            return
        self.step.complete(plan, sink)  # raises PublishError: then nothing is committed
        if isinstance(sink, KafkaSink):
            self._broker_ok()  # the producer's records were acknowledged
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in plan.offsets.items()
        }
        if consumer is None:
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
