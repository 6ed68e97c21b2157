"""The worker's broker-free batch step: records in, a publish plan out, then publication.

:func:`parse_records` splits a micro-batch into ``oks`` (:class:`Parsed`: the event with
the record it came from) and ``errs`` (:class:`Failed`: the record with why it was
refused), like Bytewax's ``oks`` / ``errs`` streams. :class:`BatchStep` runs the oks
through ``Engine.process`` in one call; an event the engine refuses comes back by its
position, so it joins the errs with its own record (nothing is searched for). If the
batch trips a bug, the events are retried one at a time and the one at fault is
dead-lettered as ``processing_error``. The step then plans the state, recommendation,
tombstone and dead-letter records (:class:`~consumers.sinks.PublishPlan`), and
:meth:`BatchStep.send` / :meth:`BatchStep.complete` publish it, bounded in size
(:mod:`consumers.bounded`), calling the ``on_published`` hook once it is acknowledged.

It touches no broker: the worker's Kafka loop, the pipeline tests and the benchmark
all drive the same step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from consumers.barrier import is_barrier
from consumers.batching import InputRecord, next_offsets
from consumers.bounded import BoundedPublisher, Delivery
from consumers.latency import BatchLatency
from consumers.residency import Residency
from consumers.sinks import OutgoingRecord, PublishPlan, Sink
from interest_core.engine import BatchOutcome, BatchStats
from interest_core.records import (
    CatalogDeletion,
    CatalogItem,
    Event,
    Recommendation,
    Rejected,
    parse_catalog,
    parse_event,
)
from interest_core.settings import LimitsSettings, Settings

if TYPE_CHECKING:
    from consumers.metrics import WorkerMetrics
    from interest_core.engine import Engine

__all__ = ["BatchStep", "Failed", "Parsed", "parse_records"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parsed:
    """A valid event and the record it was read from (one per event: not frozen, whose
    fields are set through ``object.__setattr__``)."""

    record: InputRecord
    event: Event


@dataclass(frozen=True, slots=True)
class Failed:
    """A record that goes to the dead-letter topic, and why."""

    record: InputRecord
    why: Rejected


def parse_records(
    records: Sequence[InputRecord], limits: LimitsSettings
) -> tuple[list[Parsed], list[Failed]]:
    """Parse a micro-batch at the edge: ``(oks, errs)``, each in record order."""
    oks: list[Parsed] = []
    errs: list[Failed] = []
    max_text_chars, max_record_bytes = limits.max_text_chars, limits.max_record_bytes
    for record in records:
        if record.value is None:
            errs.append(Failed(record, Rejected("null_value", "event record has a null value")))
            continue
        parsed = parse_event(
            record.value,
            # Named by where it was read only when it has no id (most events have one).
            fallback_id=lambda record=record: record.source,
            offset=record.offset,
            partition=record.partition,
            max_text_chars=max_text_chars,
            max_record_bytes=max_record_bytes,
        )
        if isinstance(parsed, Rejected):
            errs.append(Failed(record, parsed))
        else:
            oks.append(Parsed(record, parsed))
    return oks, errs


class BatchStep:
    """One micro-batch through the engine, planned and published.

    ``residency`` tracks where the batch's users live (and reloads evicted ones);
    ``metrics`` gets the batch hooks; ``on_published`` is called with each batch's
    :class:`~consumers.latency.BatchLatency` once its records are acknowledged;
    ``on_change`` after the users or items held changed; ``worker_id`` is stamped on
    dead letters.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: WorkerMetrics,
        residency: Residency,
        *,
        worker_id: str,
        on_published: Callable[[BatchLatency], None] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.residency = residency
        self.worker_id = worker_id
        self.on_published = on_published
        self.on_change = on_change
        #: Partitions of the signals topic (the worker sets the topic's own count).
        self.signal_partitions = settings.topics.item_signals_partitions
        self.publisher = BoundedPublisher(
            max_bytes=settings.limits.max_publish_bytes,
            deadletter_topic=settings.topics.deadletter,
            state_topic=settings.topics.state,
            recommendations_topic=settings.topics.recommendations,
            hooks=metrics,
        )

    # ------------------------------------------------------------ catalog

    def apply_catalog(self, records: Sequence[InputRecord]) -> None:
        """Apply catalog records in order: upserts batched, deletions where they fall."""
        upserts: dict[str, CatalogItem] = {}

        def flush_upserts() -> None:
            if upserts:
                self.engine.upsert_items(list(upserts.values()))
                self.metrics.catalog_applied("upsert", len(upserts))
                upserts.clear()

        for record in records:
            if is_barrier(record.key):  # a read-your-writes marker, not a catalog record
                continue
            parsed = parse_catalog(record.key, record.value)
            if isinstance(parsed, Rejected):
                log.warning(
                    "catalog record %s rejected: %s (%s)",
                    record.source,
                    parsed.reason,
                    parsed.detail,
                )
                self.metrics.catalog_applied(parsed.reason)
            elif isinstance(parsed, CatalogDeletion):
                upserts.pop(parsed.item_id, None)
                flush_upserts()
                self.engine.delete_items([parsed.item_id])
                self.metrics.catalog_applied("delete")
            else:
                upserts.pop(parsed.item_id, None)  # keep the latest, in arrival order
                upserts[parsed.item_id] = parsed
        flush_upserts()
        self.on_change()

    # ------------------------------------------------------------ events

    def process(self, records: Sequence[InputRecord]) -> PublishPlan:
        """Parse, validate and process one micro-batch; returns what to publish and the
        offsets to commit once it is acknowledged (see :meth:`send`, :meth:`complete`)."""
        cpu = time.thread_time()
        plan = PublishPlan(
            records_in=len(records), started=time.perf_counter(), started_at=time.time()
        )
        plan.offsets = next_offsets(records)
        oks, errs = parse_records(records, self.settings.limits)
        parse_s = time.perf_counter() - plan.started
        self.metrics.records_consumed(
            ["invalid"] * len(errs) + [parsed.event.type for parsed in oks]
        )
        self.residency.arrive({p.event.user_id: p.record.partition for p in oks})
        stats = BatchStats()
        if oks:
            outcome = self._run_engine([p.event for p in oks], plan, [p.record for p in oks])
            stats = outcome.stats or stats
            plan.duplicates = outcome.duplicates
            errs.extend(Failed(oks[i].record, why) for i, why in outcome.rejected)
            refused = {i for i, _ in outcome.rejected}
            self._plan_outcome(plan, [p for i, p in enumerate(oks) if i not in refused], outcome)
        plan.dead_letters = [self._dead_letter(failed) for failed in errs]
        plan.encode_s = stats.encode_s
        plan.processed_at = time.time()
        plan.process_cpu_s = time.thread_time() - cpu
        self.metrics.batch_done(
            size=len(records),
            parse_s=parse_s,
            encode_s=stats.encode_s,
            update_s=stats.update_s,
            search_s=stats.search_s,
            rank_s=stats.rank_s,
            texts_encoded=stats.texts_encoded,
            cache_hits=stats.cache_hits,
            cache_misses=stats.cache_misses,
            events_applied=stats.events_applied,
            duplicates=plan.duplicates,
        )
        return plan

    def _plan_outcome(self, plan: PublishPlan, kept: list[Parsed], outcome: BatchOutcome) -> None:
        """State, recommendations and tombstones of the outcome; latency inputs of the
        events the engine kept; the item signals not written yet (those of a batch the
        engine ran again one event at a time: see :meth:`_run_engine`)."""
        for parsed in kept:
            plan.event_times.append(parsed.event.ts)
            plan.ingest_times.append(parsed.record.ingested_at)
            plan.polled_times.append(parsed.record.polled_at)
        topics = self.settings.topics
        self._plan_signals(plan, [parsed.record for parsed in kept])
        for user_id in outcome.changed_users:
            blob = self.engine.export_user(user_id)
            plan.states.append(OutgoingRecord(topics.state, user_id.encode(), blob))
        for rec in outcome.recommendations:
            plan.recommendations.append(
                OutgoingRecord(topics.recommendations, rec.user_id.encode(), rec.to_json())
            )
        for user_id in outcome.deleted_users:
            key = user_id.encode()
            plan.states.append(OutgoingRecord(topics.state, key, None))
            plan.recommendations.append(OutgoingRecord(topics.recommendations, key, None))
        self.residency.forget(outcome.deleted_users)

    def _plan_signals(self, plan: PublishPlan, records: Sequence[InputRecord]) -> None:
        """The engine's item signals and fusion lessons of this batch, for
        ``interest.item-signals`` (bundles of items by signals partition, then the lessons)."""
        take = getattr(self.engine, "take_item_signals", None)
        if take is None:
            return
        signals, lessons = take()
        if not signals and not lessons:
            return
        from consumers.knowledge_follower import BUNDLE_BYTES, signal_records

        ingested = {(r.partition, r.offset): r.ingested_at for r in records}
        topic = self.settings.topics.item_signals
        plan.signals.extend(
            OutgoingRecord(topic, key, value)
            for key, value in signal_records(
                signals,
                lessons,
                ingested,
                partitions=self.signal_partitions,
                max_bytes=min(BUNDLE_BYTES, self.settings.limits.max_publish_bytes // 2),
            )
        )

    def _dead_letter(self, failed: Failed) -> OutgoingRecord:
        """The dead-letter record of ``failed``: its key and value, the reason in headers."""
        record, why = failed.record, failed.why
        headers = (
            ("reason", why.reason.encode()),
            ("detail", why.detail.encode("utf-8", "replace")[:1000]),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("worker_id", self.worker_id.encode()),
        )
        return OutgoingRecord(self.settings.topics.deadletter, record.key, record.value, headers)

    def _run_engine(
        self, events: list[Event], plan: PublishPlan, records: list[InputRecord]
    ) -> BatchOutcome:
        """``Engine.process`` on the batch; if it raises, one event at a time.

        The batch's item signals are written once its events are applied
        (``Engine.on_applied``), while the co-occurrence thread finishes their updates,
        not after the rankings, whose first read would wait for that thread
        (docs/RESULTS.md, round 22). An error there is raised once the engine returns, as
        it was when the plan wrote them."""
        failed: list[Exception] = []

        def write_signals() -> None:
            try:
                self._plan_signals(plan, records)
            except Exception as exc:  # not the batch's fault: raised below
                failed.append(exc)

        self.engine.on_applied = write_signals
        outcome: BatchOutcome | None = None
        try:
            outcome = self.engine.process(events, published_at=time.time())
        except Exception:
            # A bug the batch tripped on must not lose the others or stop the worker:
            # find the event(s) at fault one by one and dead-letter them.
            log.exception("batch of %d events failed; retrying them one at a time", len(events))
        finally:
            self.engine.on_applied = None
        if failed:
            raise failed[0]
        return outcome if outcome is not None else self._one_by_one(events)

    def _one_by_one(self, events: list[Event]) -> BatchOutcome:
        """Process ``events`` singly; an event that raises is rejected (by its position)
        as ``processing_error``. One recommendation per user: the latest."""
        recommendations: dict[str, Recommendation] = {}
        rejected: list[tuple[int, Rejected]] = []
        changed: dict[str, None] = {}
        deleted: dict[str, None] = {}
        duplicates = 0
        last_stats: Any = None
        for position, event in enumerate(events):
            try:
                outcome = self.engine.process([event], published_at=time.time())
            except Exception as exc:
                log.exception("event %s failed", event.event_id)
                why = Rejected("processing_error", f"{type(exc).__name__}: {exc}"[:300])
                rejected.append((position, why))
                continue
            last_stats = outcome.stats
            duplicates += outcome.duplicates
            rejected.extend((position, why) for _, why in outcome.rejected)
            recommendations.update((rec.user_id, rec) for rec in outcome.recommendations)
            for user_id in outcome.changed_users:
                changed[user_id] = None
                deleted.pop(user_id, None)
            for user_id in outcome.deleted_users:
                deleted[user_id] = None
                changed.pop(user_id, None)
                recommendations.pop(user_id, None)
        return BatchOutcome(
            recommendations=list(recommendations.values()),
            rejected=rejected,
            changed_users=list(changed),
            deleted_users=list(deleted),
            duplicates=duplicates,
            stats=last_stats,
        )

    # ------------------------------------------------------------ publication

    def first_records(self, plan: PublishPlan) -> list[OutgoingRecord]:
        """What goes out as soon as ``plan`` is processed: with item signals, the signals,
        dead letters and recommendations (its states wait, see :meth:`held_records`);
        without, everything, recommendations before states (:attr:`PublishPlan.outgoing`)."""
        if plan.signals:
            return [*plan.signals, *plan.dead_letters, *plan.recommendations]
        return plan.outgoing

    def held_records(self, plan: PublishPlan) -> list[OutgoingRecord]:
        """What may be sent only once :meth:`first_records` are acknowledged: the states of
        a plan with item signals. Once a user's new state is on the state topic its events
        are skipped on re-processing, so their signals must be acknowledged before the
        state is even sent (re-sent ones are deduplicated by the aggregation)."""
        return plan.states if plan.signals else []

    def send(self, records: Sequence[OutgoingRecord], sink: Sink) -> Delivery[OutgoingRecord]:
        """Hand ``records`` to ``sink``, bounded in size, without waiting."""
        return self.publisher.send(records, sink)

    def settle(self, delivery: Delivery[OutgoingRecord], sink: Sink) -> list[OutgoingRecord]:
        """Wait for ``delivery``'s acknowledgements (retrying refusals); those delivered. A
        dead letter that cannot be delivered even truncated is counted as poison and
        skipped; raises :class:`~consumers.sinks.PublishError` only when a state or
        recommendation could not be delivered for a reason other than its size (then
        nothing may be committed)."""
        return self.publisher.complete(delivery, sink)

    def published(
        self,
        plan: PublishPlan,
        delivered: Sequence[OutgoingRecord],
        *,
        acked_at: float,
        publish_s: float,
    ) -> None:
        """``plan``'s first records were acknowledged at ``acked_at`` (unix seconds; its
        dead letters are among ``delivered``): metrics and the ``on_published`` hook.
        ``publish_s`` is the worker's own time sending and waiting for them."""
        deadletter = self.settings.topics.deadletter
        for record in delivered:
            if record.topic == deadletter:
                self.metrics.dead_lettered(dict(record.headers)["reason"].decode())
        if plan.signals:
            self.metrics.item_signals(len(plan.signals))
        latency = BatchLatency(
            ingested=np.asarray(plan.ingest_times, dtype=np.float64),
            polled=np.asarray(plan.polled_times, dtype=np.float64),
            started=plan.started_at,
            processed=plan.processed_at or plan.started_at,
            acked=acked_at,
            encode_s=plan.encode_s,
            records=plan.records_in,
            process_cpu_s=plan.process_cpu_s,
        )
        self.metrics.published(
            publish_s=publish_s,
            batch_s=time.perf_counter() - plan.started,
            recommendations=sum(1 for r in plan.recommendations if r.value is not None),
            tombstones=plan.tombstones,
            state_writes=len(plan.states),
            published_at=acked_at,
            event_times=plan.event_times,
            ingest_times=plan.ingest_times,
            latency=latency,
        )
        self.on_change()
        if self.on_published is not None:
            self.on_published(latency)
