"""SIGTERM / SIGINT for a process that may still be blocked connecting to Kafka.

A worker asked to stop finishes its batch, commits and leaves the group: the handler
only sets an event which its loop reads. Before the loop exists, the process may be
blocked for minutes in a client's bootstrap (``kafka.bootstrap_timeout_ms``), reading no
event; nothing is in hand or to commit, so the handler raises
:class:`StoppedWhileStarting` in the main thread to stop it there and then.

A raise from a signal handler can be swallowed. The handler runs wherever the main
thread is, and Python drops an exception raised inside a garbage-collector callback, a
``__del__`` or a weakref callback ("Exception ignored in ..."). The worker installs a
collector callback (:mod:`consumers.runtime`), and start-up allocates enough to collect
often: a stop that landed in it was lost, and the process went on connecting (a CI run
once waited 60 s for a worker to exit after SIGTERM). So until the main thread says it
caught the stop (:meth:`StopSignals.caught`) or start-up has ended, the signal is
sent again to the main thread every ``redeliver_s`` seconds (``signal.pthread_kill``: a
real signal, which also interrupts a blocking wait there).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Self

__all__ = ["StopSignals", "StoppedWhileStarting"]

log = logging.getLogger(__name__)


class StoppedWhileStarting(SystemExit):
    """SIGTERM / SIGINT arrived before the worker consumed anything.

    A SystemExit (a requested exit, not a failure), so that no ``except Exception`` on
    the way (loading the model, connecting) mistakes the stop for an error.
    """


class StopSignals:
    """Sets ``stop`` on SIGTERM and SIGINT; while ``starting()`` holds, also raises
    :class:`StoppedWhileStarting` in the main thread, again every ``redeliver_s`` seconds
    until :meth:`caught` is called or ``starting()`` no longer holds."""

    def __init__(
        self,
        stop: threading.Event,
        starting: Callable[[], bool],
        *,
        redeliver_s: float = 1.0,
    ) -> None:
        self.stop = stop
        self.starting = starting
        self.redeliver_s = redeliver_s
        self._caught = threading.Event()
        self._last_raise = float("-inf")
        self._redelivering = False

    def install(self) -> Self:
        """Handle SIGTERM and SIGINT (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def caught(self) -> None:
        """The main thread has caught the stop: no more deliveries."""
        self._caught.set()

    def _pending(self) -> bool:
        return not self._caught.is_set() and self.starting()

    def _handle(self, signum: int, _frame: Any) -> None:
        self.stop.set()
        if not self._pending():
            log.info("signal %d: finishing the batch in hand and leaving the group", signum)
            return
        now = time.monotonic()
        if now - self._last_raise < self.redeliver_s:
            return  # one raise is on its way up already
        self._last_raise = now
        if not self._redelivering:
            self._redelivering = True
            threading.Thread(
                target=self._redeliver, args=(signum,), name="stop-redelivery", daemon=True
            ).start()
        raise StoppedWhileStarting(signum)

    def _redeliver(self, signum: int) -> None:
        """Deliver the signal again while it has not taken effect (see the module doc)."""
        while True:
            self._caught.wait(self.redeliver_s)
            if not self._pending():
                return
            log.info("signal %d: not taken up yet, sent again", signum)
            main = threading.main_thread().ident
            if main is not None:
                signal.pthread_kill(main, signum)
