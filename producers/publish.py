"""Publishing records with nothing lost: every send's future is kept and checked.

``interest replay`` and ``interest catalog load`` both publish through a
:class:`Publisher` and report a :class:`PublishSummary`: sent, failed, rejected lines
with their reasons, and throughput.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from interest_core.settings import Settings
from producers.kafka_client import make_producer

__all__ = ["MAX_REPORTED_LINES", "PublishSummary", "Publisher", "bulk_producer"]

log = logging.getLogger(__name__)

#: Rejected lines kept with their number and detail for the report (all are counted).
MAX_REPORTED_LINES = 20
# Futures already resolved are dropped once this many are pending, bounding memory.
_PENDING_CHECK = 20_000


@dataclass
class PublishSummary:
    """What a publish run did. ``elapsed_s`` is wall-clock seconds of the send phase."""

    topic: str
    lines: int = 0
    sent: int = 0
    failed: int = 0
    invalid_sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_lines: list[tuple[int, str, str]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when every record handed to Kafka was acknowledged."""
        return self.failed == 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def records_per_s(self) -> float:
        """Acknowledged records per wall-clock second."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def reject(self, line_no: int, reason: str, detail: str) -> None:
        """Count a line that failed validation (and keep the first few for the report)."""
        self.rejected[reason] += 1
        if len(self.rejected_lines) < MAX_REPORTED_LINES:
            self.rejected_lines.append((line_no, reason, detail))
        log.debug("line %d rejected: %s (%s)", line_no, reason, detail)

    def report(self) -> str:
        """A short, human-readable summary (several lines)."""
        out = [
            f"{self.sent} records sent to {self.topic} in {self.elapsed_s:.2f} s "
            f"({self.records_per_s:,.0f}/s); {self.lines} lines read"
        ]
        if self.rejected:
            what = "sent anyway" if self.invalid_sent else "skipped"
            out.append(f"{self.rejected_total} invalid lines {what}:")
            out.extend(f"  {reason}: {n}" for reason, n in self.rejected.most_common())
            out.extend(
                f"  line {line_no}: {reason} ({detail})"
                for line_no, reason, detail in self.rejected_lines
            )
            if self.rejected_total > len(self.rejected_lines):
                out.append(f"  ... {self.rejected_total - len(self.rejected_lines)} more")
        if self.interrupted:
            out.append("interrupted: the rest of the file was not sent")
        if self.failed:
            out.append(f"{self.failed} sends FAILED:")
            out.extend(f"  {error}: {n}" for error, n in self.failures.most_common())
        return "\n".join(out)


def bulk_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer tuned for bulk loads: acks=all and idempotent, with larger batches."""
    kwargs: dict[str, Any] = {
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
    }
    kwargs.update(overrides)
    return make_producer(settings, **kwargs)


class Publisher:
    """Sends records and keeps every future; :meth:`finish` flushes and checks them all."""

    def __init__(self, producer: KafkaProducer, summary: PublishSummary) -> None:
        self.producer = producer
        self.summary = summary
        self._pending: deque[Any] = deque()

    def send(self, key: bytes | None, value: bytes | None) -> None:
        """Hand one record to the producer (asynchronously); failures are counted, not raised."""
        try:
            future = self.producer.send(self.summary.topic, key=key, value=value)
        except (KafkaError, ValueError, TypeError) as exc:  # refused before queueing
            self._failed(exc)
            return
        self._pending.append(future)
        if len(self._pending) >= _PENDING_CHECK:
            self._settle(block=False)

    def _failed(self, exc: BaseException) -> None:
        self.summary.failed += 1
        self.summary.failures[type(exc).__name__] += 1
        log.warning("send failed: %s", exc)

    def _settle(self, *, block: bool) -> None:
        pending = self._pending
        while pending and (block or pending[0].is_done):
            future = pending.popleft()
            if not future.is_done:
                try:
                    future.get(timeout=0)
                except Exception as exc:
                    self._failed(exc)
                    continue
            if future.failed():
                self._failed(future.exception)
            else:
                self.summary.sent += 1

    def finish(self, timeout_s: float | None = None) -> PublishSummary:
        """Flush, then resolve every future: each is either acknowledged or counted failed."""
        started = time.monotonic()
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("flush did not complete: %s", exc)
        self._settle(block=True)
        log.debug("flush and check took %.3f s", time.monotonic() - started)
        return self.summary
