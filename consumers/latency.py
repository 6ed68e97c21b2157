"""Where an event's time goes between ingest and publication, per micro-batch.

Every valid event of a batch is timed at four points (unix seconds): its Kafka record
timestamp (``ingested``), the poll that returned it (``polled``), the start and end of
its batch's processing (``started``, ``processed``), and the acknowledgement of the
batch's records by the broker (``acked``). The stages between them:

==============  ==========================================================================
``kafka``       ingested -> polled: producer linger, broker, fetch wait, consumer buffer
``batch_wait``  polled -> started: in the reader's pipe, the micro-batch, behind the previous batch
``process``     started -> processed: parse, encode, update, search, rank, serialise
``publish``     processed -> acked: sending, the previous batch's acknowledgement, this
                batch's acknowledgement (``acks=all``)
==============  ==========================================================================

``encode`` (part of ``process``) is per batch: the encoder's seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["STAGES", "BatchLatency", "processing_load"]

#: The stages of ingest -> publish, in order.
STAGES: tuple[str, ...] = ("kafka", "batch_wait", "process", "publish")


@dataclass(frozen=True)
class BatchLatency:
    """One published micro-batch's timings (unix seconds; arrays per valid event)."""

    ingested: np.ndarray
    polled: np.ndarray
    started: float
    processed: float
    acked: float
    encode_s: float = 0.0
    records: int = 0
    #: CPU seconds of the worker's thread while processing the batch (``process`` is the
    #: wall clock: the two differ when the thread waited for a core or the lock).
    process_cpu_s: float = 0.0

    @property
    def events(self) -> int:
        return len(self.ingested)

    def ingest_to_publish(self) -> np.ndarray:
        """Seconds from each event's Kafka timestamp to the acknowledgement of its batch."""
        return np.maximum(self.acked - self.ingested, 0.0)

    def stages(self) -> dict[str, np.ndarray]:
        """Seconds per event in each of :data:`STAGES` (they add up to ingest_to_publish,
        clipped at zero where clocks disagree)."""
        n = self.events
        polled = np.where(self.polled > 0.0, self.polled, self.started)
        return {
            "kafka": np.maximum(polled - self.ingested, 0.0),
            "batch_wait": np.maximum(self.started - polled, 0.0),
            "process": np.full(n, max(self.processed - self.started, 0.0)),
            "publish": np.full(n, max(self.acked - self.processed, 0.0)),
        }


def processing_load(batches: Sequence[BatchLatency]) -> dict[str, float | None]:
    """How busy the worker's thread was with ``batches`` (consecutive, in order):
    ``process_cpu_us_per_record``, its CPU microseconds per record processed;
    ``process_busy_share``, the share of the span from the first batch's start to the
    last one's end spent processing (wall clock: near 1, the thread had no time left and
    events queued); ``process_on_cpu_share``, the thread's CPU over that processing time
    (below 1, it waited for a core or the interpreter lock while processing). None where
    there is nothing to divide by."""
    records = sum(b.records for b in batches)
    wall = sum(max(b.processed - b.started, 0.0) for b in batches)
    cpu = sum(b.process_cpu_s for b in batches)
    span = max((b.processed for b in batches), default=0.0) - min(
        (b.started for b in batches), default=0.0
    )
    return {
        "process_cpu_us_per_record": 1e6 * cpu / records if records and cpu > 0 else None,
        "process_busy_share": wall / span if span > 0 else None,
        "process_on_cpu_share": cpu / wall if wall > 0 and cpu > 0 else None,
    }
