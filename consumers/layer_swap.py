"""A worker's adaptation layer: follows ``adapter.matrix`` versions, swaps without a pause.

The trainer publishes versions of the layer on the models topic; the worker's
:class:`~consumers.params_follower.ParamsFollower` hands over the accepted records and
:class:`LayerSwap` puts the newest in use: it validates it with the engine
(:meth:`~interest_core.adapter.ItemSpace.begin`), projects the catalog on a helper
thread while batches go on with the layer in use, and switches between two batches
(:meth:`finish`), the only pause. A tombstone returns to the identity. A version the
engine refuses (entries beyond +-1000) is logged and counted; the last good one stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from consumers.trainer import ADAPTER_PARAM, adapter_spec, weights_of
from interest_core.adapter import AdapterWeights, SpaceSwap
from interest_core.params import ParamRecord, ParamSpec

__all__ = ["LayerSwap"]

log = logging.getLogger(__name__)


class LayerSwap:
    """Puts published layer versions in use in ``engine``; ``metrics`` gets the hooks
    (``model_record``, ``param_in_use``, ``adapter_swapped``); ``enabled`` False keeps
    the identity whatever is published; ``name`` prefixes the log lines."""

    def __init__(self, engine: Any, metrics: Any, *, enabled: bool, name: str) -> None:
        self.engine = engine
        self.metrics = metrics
        self.enabled = enabled
        self.name = name
        self._swap: tuple[SpaceSwap, Future[None]] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def apply(self, records: Sequence[ParamRecord], held: ParamRecord | None) -> None:
        """Start using the newest ``adapter.matrix`` among ``records`` (between batches).
        ``held`` is what the models table holds after them (None after a tombstone)."""
        if not self.enabled:
            return
        newest = next((r for r in reversed(records) if r.name == ADAPTER_PARAM), None)
        target = self.engine.space.version if self._swap is None else self._swap[0].adapter.version
        if newest is None and held is None and target != 0:
            weights = AdapterWeights.identity(self.engine.dim, self.engine.model_name)
        elif newest is not None and newest.version != target:
            weights = weights_of(newest)
        else:
            return
        self.finish(wait=True)  # one swap at a time: the newer one starts after it
        swap = self.engine.space.begin(weights)
        if isinstance(swap, str):
            log.warning("%s: adapter v%d refused: %s", self.name, weights.version, swap)
            self.metrics.model_record("refused_by_engine")
            self.metrics.param_in_use(ADAPTER_PARAM, self.engine.space.version)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="adapter-swap")
        self._swap = (swap, self._pool.submit(swap.run))

    def finish(self, *, wait: bool = False) -> bool:
        """Switch to a version whose projection is done (between two batches; ``wait``
        blocks until it is). True when a version was put in use."""
        if self._swap is None:
            return False
        swap, projecting = self._swap
        if not wait and not projecting.done():
            return False
        self._swap = None
        projecting.result()
        started = time.perf_counter()
        late = self.engine.space.commit(swap)
        pause = time.perf_counter() - started
        self.metrics.adapter_swapped(self.engine.space.version, pause)
        log.info(
            "%s: adaptation layer v%d in use (projected in %.2f s off the batch path; "
            "%d late rows, %.3f s between batches)",
            self.name,
            swap.adapter.version,
            swap.seconds,
            late,
            pause,
        )
        return True

    def spec(self) -> ParamSpec:
        """What the models topic's ``adapter.matrix`` must be for this engine."""
        return adapter_spec(self.engine.dim, self.engine.model_name)

    def load(self, models: Any, stop: threading.Event, tick: Callable[[], None]) -> None:
        """Read the models topic (a started ``ParamsFollower``) to its end and put the
        fleet's layer in use before the first event (waiting for the projection)."""
        while not models.caught_up and not stop.is_set():
            models.poll(0.2)
            tick()
        held = models.get(ADAPTER_PARAM)
        self.apply([] if held is None else [held], held)
        self.finish(wait=True)
        self.metrics.param_in_use(ADAPTER_PARAM, self.engine.space.version)

    def follow(self, models: Any) -> None:
        """Between two batches: take what the models topic brought, switch when ready."""
        self.apply(models.poll(0), models.get(ADAPTER_PARAM))
        self.finish()

    def close(self) -> None:
        """Drop a projection in progress and the helper thread (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._swap = None, None
