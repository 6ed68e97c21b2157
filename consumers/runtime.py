"""The worker process's interpreter, set for latency (``[runtime]`` settings).

Two CPython defaults cost a worker tens to hundreds of milliseconds at the tail
(measured with ``interest bench`` on the interaction stream, docs/RESULTS.md):

- **The thread switch interval** (5 ms). The worker thread shares the interpreter lock
  with the Kafka clients' threads; every client call that waits on a socket hands the
  lock over, and getting it back can take a whole interval. A worker makes several such
  calls per micro-batch.
- **Full garbage collections**. A worker's heap (catalog, item knowledge, user states)
  holds millions of references; a full pass over it took up to 425 ms here, once every few
  seconds while the heap grows. :class:`CollectorPolicy` moves the objects that survived
  a full collection out of the collector's reach (``gc.freeze``), so the next full
  collections scan only what is newer, and puts everything back every
  ``full_gc_every_s`` so that reference cycles among old objects are still reclaimed
  (plain reference counting frees everything else at once, frozen or not).

Both are process-wide: :func:`tune_interpreter` is called by the processes that run a
worker (``interest worker``, ``interest bench``), never by the library itself.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from interest_core.settings import RuntimeSettings

__all__ = ["CollectorPolicy", "tune_interpreter"]


class CollectorPolicy:
    """After each full collection, freeze its survivors; every ``full_every_s`` seconds,
    unfreeze them so that the next full collection scans the whole heap.

    ``clock`` returns monotonic seconds (injected so a test can drive time). Install with
    :meth:`install`; :meth:`uninstall` restores the default collector.
    """

    def __init__(self, full_every_s: float, *, clock: Callable[[], float] = time.monotonic):
        if full_every_s <= 0:
            raise ValueError(f"full_every_s must be positive, got {full_every_s}")
        self.full_every_s = full_every_s
        self._clock = clock
        self._next_full = clock() + full_every_s
        #: Full collections seen, and how many of them were complete passes.
        self.full_collections = 0
        self.complete_passes = 0
        # Whether this policy holds objects frozen. Kept here, not read back: the
        # interpreter's gc.get_freeze_count() walks the whole frozen list (35 ms for the
        # 405,740 objects of a process holding the encoder), and asking it after every
        # full collection made those batches the bench's slowest (RESULTS.md, round 12).
        self._frozen = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` hook."""
        if phase != "stop" or info.get("generation") != 2:
            return
        self.full_collections += 1
        now = self._clock()
        if not self._frozen:
            # This collection scanned everything (the first one, or one after a thaw).
            self.complete_passes += 1
        if now >= self._next_full:
            self._next_full = now + self.full_every_s
            gc.unfreeze()  # the next full collection scans the whole heap again
            self._frozen = False
        else:
            gc.freeze()
            self._frozen = True

    def settle(self) -> None:
        """A full collection now, its survivors frozen (by this policy, installed): for a
        process that has loaded what it keeps (model, catalog, knowledge) and is about to
        serve, so that its first full collection in service does not scan all of that
        (240 ms for a worker holding the default model, 494,077 objects; docs/RESULTS.md
        round 17)."""
        gc.collect()

    def install(self) -> CollectorPolicy:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        gc.unfreeze()
        self._frozen = False


def tune_interpreter(settings: RuntimeSettings) -> CollectorPolicy | None:
    """Apply ``settings`` to this process: the switch interval, torch's threads (when the
    process uses torch), and the collector policy (returned; None when
    ``full_gc_every_s`` is 0)."""
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    torch = sys.modules.get("torch")  # imported by an encoder that runs on torch
    if settings.torch_threads > 0 and torch is not None:
        torch.set_num_threads(settings.torch_threads)
    if settings.full_gc_every_s <= 0:
        return None
    return CollectorPolicy(settings.full_gc_every_s).install()
