"""Which users are in memory, and for which events partition: restore, evict, reload, release.

The one owner of recovery (the role of Quix Streams' ``state/recovery.py``). A user's
state lives on the compacted state topic, keyed like the events, and in memory only
while its events partition is assigned here:

- **assign**: new partitions are paused and marked *restoring* (with an assignment
  epoch); :meth:`Residency.restore_pending`, on the worker thread, reads their users
  from the state topic, then resumes them. A partition revoked or re-assigned during
  the read is left to its next restore; a failed read is retried after
  ``RESTORE_RETRY_S`` seconds.
- **evict**: users idle for ``state.user_ttl_s`` seconds (wall clock), then the least
  recently active beyond ``state.max_users``, leave memory; their ids are remembered.
- **reload**: a batch naming an evicted user reads its state back before the engine
  sees the batch.
- **release**: users of revoked or lost partitions leave memory.

The broker is reached only through the injected :class:`StateSource` and the
``resume`` / ``keep_alive`` callbacks, so all of it runs with no Kafka in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from kafka.errors import KafkaError

from consumers.state_store import StateEntry, StateRestoreError
from interest_core.settings import Settings

if TYPE_CHECKING:
    from consumers.metrics import WorkerMetrics
    from interest_core.engine import Engine

__all__ = ["RESTORE_RETRY_S", "Residency", "StateSource"]

log = logging.getLogger(__name__)

#: Seconds between attempts at a restore that failed (the partitions stay paused).
RESTORE_RETRY_S = 1.0


class StateSource(Protocol):
    """Reads users' latest state (see :class:`consumers.state_store.StateReader`)."""

    def read(
        self,
        partitions: Collection[int] | None = None,
        *,
        users: Collection[str] | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, StateEntry]: ...


class Residency:
    """The users held in memory by events partition, and the partitions owned.

    ``engine`` holds the users; ``state_source`` reads state back (None: users start
    fresh); ``metrics`` gets the restore / evict / release hooks; ``on_change`` is called
    after the users held changed (the worker refreshes its gauges); ``name`` prefixes logs.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: WorkerMetrics,
        *,
        state_source: StateSource | None = None,
        on_change: Callable[[], None] = lambda: None,
        name: str = "worker",
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.state_source = state_source
        self.on_change = on_change
        self.name = name
        self._user_partition: dict[str, int] = {}  # user -> events partition, users in memory
        self._evicted: dict[str, int] = {}  # user -> events partition, evicted while idle
        self._assigned: set[int] = set()  # events partitions owned
        # events partition -> assignment epoch, for partitions paused until restored
        self._restoring: dict[int, int] = {}
        self._assign_epoch = 0
        self._next_restore_try = 0.0

    # ------------------------------------------------------------ partitions

    @property
    def assigned(self) -> frozenset[int]:
        """Events partitions owned now."""
        return frozenset(self._assigned)

    @property
    def restoring(self) -> frozenset[int]:
        """Owned partitions paused until their users are restored."""
        return frozenset(self._restoring)

    def assign(self, partitions: Collection[int]) -> list[int]:
        """Own ``partitions``; returns the new ones (sorted), now waiting to be restored
        (the caller pauses them until :meth:`restore_pending` resumes them)."""
        new = sorted(set(partitions) - self._assigned)
        if new:
            self._assign_epoch += 1
            for partition in new:
                self._restoring[partition] = self._assign_epoch
            self._next_restore_try = 0.0
        self._assigned |= set(partitions)
        return new

    def release(self, partitions: Iterable[int]) -> int:
        """Give up ``partitions`` (revoked or lost): their users leave memory and any
        restore of them is abandoned; returns the users dropped."""
        gone = set(partitions)
        users = [u for u, p in self._user_partition.items() if p in gone]
        for user_id in users:
            self.engine.forget_user(user_id)
            del self._user_partition[user_id]
        for user_id in [u for u, p in self._evicted.items() if p in gone]:
            del self._evicted[user_id]
        self._assigned -= gone
        for partition in gone:
            self._restoring.pop(partition, None)
        self.metrics.released(len(users))
        self.on_change()
        return len(users)

    def clear(self) -> None:
        """Own nothing (the loop ended); users stay in memory."""
        self._assigned.clear()

    def restore_pending(
        self,
        *,
        resume: Callable[[list[int]], None],
        keep_alive: Callable[[], None] | None = None,
        on_read: Callable[[], None] = lambda: None,
    ) -> int:
        """Restore the users of partitions waiting since :meth:`assign`, then ``resume``
        them; returns the users loaded. ``keep_alive`` is called during the read (the
        worker polls its other partitions so the group keeps it), ``on_read`` once the
        read succeeded (a broker round trip). Nothing is due before the retry time of a
        failed attempt."""
        if not self._restoring or time.monotonic() < self._next_restore_try:
            return 0
        if self.state_source is None:
            resume(list(self._restoring))
            self._restoring.clear()
            return 0
        epochs = dict(self._restoring)
        wanted = sorted(epochs)
        start = time.perf_counter()
        try:
            entries = self.state_source.read(wanted, keep_alive=keep_alive)
        except (StateRestoreError, KafkaError) as exc:
            self._next_restore_try = time.monotonic() + RESTORE_RETRY_S
            log.warning(
                "%s: restoring partitions %s failed (%s); retrying in %.0f s",
                self.name,
                wanted,
                exc,
                RESTORE_RETRY_S,
            )
            return 0
        on_read()
        done = [p for p in wanted if self._restoring.get(p) == epochs[p]]
        chosen = set(done)
        loaded = self._import(e for e in entries.values() if e.partition in chosen)
        for partition in done:
            del self._restoring[partition]
        resume(done)
        seconds = time.perf_counter() - start
        self.metrics.state_restored(seconds=seconds, users=loaded)
        self.on_change()
        log.info(
            "%s restored %d users of partitions %s in %.3f s (%d state records, %d bytes)",
            self.name,
            loaded,
            done,
            seconds,
            getattr(self.state_source, "last_read_records", -1),
            getattr(self.state_source, "last_read_bytes", -1),
        )
        return loaded

    def restore_partitions(self, partitions: Iterable[int]) -> int:
        """Load the users of events ``partitions`` now (no pausing); returns users loaded."""
        wanted = sorted(set(partitions))
        if not wanted or self.state_source is None:
            return 0
        start = time.perf_counter()
        entries = self.state_source.read(wanted)
        loaded = self._import(entries.values())
        seconds = time.perf_counter() - start
        self.metrics.state_restored(seconds=seconds, users=loaded)
        log.info(
            "%s restored %d users of partitions %s in %.3f s", self.name, loaded, wanted, seconds
        )
        return loaded

    # ------------------------------------------------------------ users

    def arrive(self, partitions: Mapping[str, int]) -> None:
        """A batch's users and the events partition each came from (the latest is
        authoritative); evicted ones among them are read back first."""
        back = {u for u in partitions if u in self._evicted}
        self._user_partition.update(partitions)
        if back:
            self._reload(back)
            self._user_partition.update((u, partitions[u]) for u in back)

    def forget(self, user_ids: Iterable[str]) -> None:
        """Users deleted: nothing of them is held or remembered."""
        for user_id in user_ids:
            self._user_partition.pop(user_id, None)
            self._evicted.pop(user_id, None)

    def evict(self, now: float | None = None) -> list[str]:
        """Evict users idle for ``state.user_ttl_s`` seconds before ``now`` (unix
        seconds, default now), then the least recently active beyond
        ``state.max_users``; returns their ids. Their state is already on the state
        topic; a later event reloads it first."""
        now = time.time() if now is None else now
        state = self.settings.state
        evicted = self.engine.evict_idle(now - state.user_ttl_s)
        evicted += self.engine.evict_least_active(state.max_users)
        for user_id in evicted:
            partition = self._user_partition.pop(user_id, None)
            if partition is not None:
                self._evicted[user_id] = partition
        self.metrics.evicted(len(evicted))
        self.on_change()
        return list(evicted)

    def eviction_interval(self) -> float:
        """Seconds between eviction checks: a quarter of the TTL, within [1, 60]."""
        return max(1.0, min(60.0, self.settings.state.user_ttl_s / 4))

    def _reload(self, back: set[str]) -> None:
        if self.state_source is None:
            log.warning("%d evicted users came back but no state source: starting fresh", len(back))
            for user_id in back:
                self._evicted.pop(user_id, None)
            return
        start = time.perf_counter()
        partitions = {self._evicted[u] for u in back}
        entries = self.state_source.read(partitions, users=back)
        loaded = self._import(entries.values())
        for user_id in back:
            self._evicted.pop(user_id, None)
        self.metrics.state_restored(seconds=time.perf_counter() - start, users=loaded)

    def _import(self, entries: Iterable[StateEntry]) -> int:
        loaded = 0
        for entry in entries:
            if entry.blob is None:
                self.engine.forget_user(entry.user_id)
                self._user_partition.pop(entry.user_id, None)
            else:
                self.engine.import_user(entry.user_id, entry.blob)
                self._user_partition[entry.user_id] = entry.partition
                loaded += 1
            self._evicted.pop(entry.user_id, None)
        self.on_change()
        return loaded
