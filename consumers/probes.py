"""What a worker's ``/healthz`` and ``/readyz`` are made of, apart from partitions, and
the crash report it leaves for its supervisor.

:class:`WorkerProbes` keeps the loop's heartbeat (alive, last tick), the last broker
round trip (the broker counts as unreachable after ``broker_silence_s`` seconds without
one) and the crash-loop note a supervisor hands a restarted worker (a readiness reason
until a batch is committed or the worker has stayed up ``CRASH_LOOP_CLEARS_AFTER_S``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "CRASH_LOOP_CLEARS_AFTER_S",
    "STALL_AFTER_S",
    "WorkerProbes",
    "crash_report",
    "write_crash_report",
]

log = logging.getLogger(__name__)

#: The loop counts as stalled (``/healthz`` 503) after this many seconds without a tick.
STALL_AFTER_S = 120.0
#: A worker started in a crash loop is not ready until it commits a batch or stays up this
#: long (seconds; the fleet's back-off resets after as long).
CRASH_LOOP_CLEARS_AFTER_S = 60.0


class WorkerProbes:
    """Liveness, broker reachability and crash-loop state (monotonic seconds)."""

    def __init__(self, broker_silence_s: float) -> None:
        self.broker_silence_s = broker_silence_s
        self.alive = False
        self.last_tick = time.monotonic()
        self.last_broker_ok: float | None = None  # the last round trip; None before any
        self.crash_loop: str | None = None
        self.started = time.monotonic()

    def tick(self) -> None:
        """The loop is turning."""
        self.last_tick = time.monotonic()

    def not_alive_reasons(self) -> list[str]:
        """Why the worker is not alive (empty while the loop runs and ticks)."""
        if not self.alive:
            return ["worker loop not running"]
        stalled = time.monotonic() - self.last_tick
        if stalled > STALL_AFTER_S:
            return [f"worker loop stalled for {stalled:.0f} s"]
        return []

    def broker_unreachable(self) -> bool:
        """No round trip for more than ``broker_silence_s`` seconds (after a first one)."""
        last = self.last_broker_ok
        return last is not None and time.monotonic() - last > self.broker_silence_s

    def broker_ok(self) -> bool:
        """A round trip succeeded; True when the broker had counted as unreachable."""
        was_unreachable = self.broker_unreachable()
        self.last_broker_ok = time.monotonic()
        return was_unreachable

    def restarted(self, crash_loop: str | None) -> None:
        """Started again by a supervisor, in the crash loop it names (if any)."""
        self.crash_loop = crash_loop
        self.started = time.monotonic()

    def crash_loop_reason(self) -> str | None:
        """The crash-loop readiness reason, until it clears by time."""
        if self.crash_loop is None:
            return None
        if time.monotonic() - self.started > CRASH_LOOP_CLEARS_AFTER_S:
            self.crash_loop = None
            return None
        return f"crash_loop: {self.crash_loop}"

    def committed(self) -> str | None:
        """A batch was committed: the crash loop (returned, if there was one) is over."""
        note, self.crash_loop = self.crash_loop, None
        return note


def crash_report(
    worker_id: str, in_hand: Mapping[tuple[str, int], int], error: BaseException
) -> dict[str, Any]:
    """Where a worker died: the first offset of the batch in hand per partition
    (``"topic[partition]": offset``) and the error."""
    return {
        "worker_id": worker_id,
        "error": f"{type(error).__name__}: {error}"[:500],
        "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(in_hand.items())},
    }


def write_crash_report(path: str, report: Mapping[str, Any]) -> None:
    """Write ``report`` as JSON to ``path`` (a failure is logged, not raised)."""
    try:
        with open(path, "wb") as handle:
            handle.write(orjson.dumps(report))
    except OSError:
        log.exception("writing the crash report to %s failed", path)
