"""Residency: which users are in memory for which partition (no broker)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry

from consumers.metrics import WorkerMetrics
from consumers.residency import Residency
from consumers.state_store import StateEntry, StateRestoreError
from interest_core.encoder import HashingEncoder
from interest_core.engine import Engine
from interest_core.records import CatalogItem, Event
from interest_core.settings import Settings


def _engine() -> Engine:
    engine = Engine(HashingEncoder(dim=64), Settings())
    engine.upsert_items([CatalogItem(f"i{n}", f"title {n}", category="Jazz") for n in range(5)])
    return engine


def _blob(user: str) -> bytes:
    """A real state blob of ``user`` (one click)."""
    engine = _engine()
    engine.learn([Event(user, 1.0, "click", f"{user}-1", item_id="i1")])
    blob = engine.export_user(user)
    assert blob is not None
    return blob


class Source:
    """A state source over fixed entries; ``during`` runs inside the read (as a
    rebalance would), ``fail`` makes the next read raise."""

    def __init__(self, entries: dict[str, StateEntry]) -> None:
        self.entries = entries
        self.during: Callable[[], None] | None = None
        self.fail = False
        self.reads: list[tuple[set[int] | None, set[str] | None]] = []

    def read(
        self,
        partitions: Collection[int] | None = None,
        *,
        users: Collection[str] | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, StateEntry]:
        self.reads.append(
            (None if partitions is None else set(partitions), None if users is None else set(users))
        )
        if self.fail:
            self.fail = False
            raise StateRestoreError("not read to the end in time")
        if self.during is not None:
            self.during()
            self.during = None
        return {
            u: e
            for u, e in self.entries.items()
            if (partitions is None or e.partition in partitions) and (users is None or u in users)
        }


def _residency(source: Source) -> tuple[Residency, Engine]:
    engine = _engine()
    metrics = WorkerMetrics(CollectorRegistry())
    return Residency(Settings(), engine, metrics, state_source=source), engine


def test_assigned_partitions_are_restored_then_resumed() -> None:
    source = Source({"a": StateEntry("a", 0, _blob("a")), "b": StateEntry("b", 1, _blob("b"))})
    residency, engine = _residency(source)
    assert residency.assign([0, 1]) == [0, 1] and residency.restoring == {0, 1}
    assert residency.assign([0, 1]) == []  # already owned: nothing new to restore
    resumed: list[list[int]] = []
    assert residency.restore_pending(resume=resumed.append) == 2
    assert resumed == [[0, 1]] and not residency.restoring
    assert engine.describe_user("a") is not None and engine.describe_user("b") is not None


def test_a_partition_revoked_during_the_read_is_not_restored_nor_resumed() -> None:
    source = Source({"a": StateEntry("a", 0, _blob("a")), "b": StateEntry("b", 1, _blob("b"))})
    residency, engine = _residency(source)
    residency.assign([0, 1])
    source.during = lambda: residency.release([1])
    resumed: list[list[int]] = []
    assert residency.restore_pending(resume=resumed.append) == 1
    assert resumed == [[0]] and residency.assigned == {0}
    assert engine.users_held == 1 and engine.describe_user("b") is None


def test_a_failed_restore_keeps_the_partitions_paused_and_is_retried() -> None:
    source = Source({"a": StateEntry("a", 0, _blob("a"))})
    residency, _ = _residency(source)
    residency.assign([0])
    source.fail = True
    resumed: list[list[int]] = []
    assert residency.restore_pending(resume=resumed.append) == 0
    assert resumed == [] and residency.restoring == {0}
    assert residency.restore_pending(resume=resumed.append) == 0  # before the retry time
    residency._next_restore_try = 0.0  # the retry time has come
    assert residency.restore_pending(resume=resumed.append) == 1 and resumed == [[0]]


def test_evicted_users_are_read_back_when_they_return_and_deleted_ones_forgotten() -> None:
    source = Source({})
    residency, engine = _residency(source)
    engine.process([Event("a", 1.0, "click", "a-1", item_id="i1")], published_at=100.0)
    residency.arrive({"a": 3})
    source.entries["a"] = StateEntry("a", 3, engine.export_user("a"))
    assert residency.evict(now=100.0 + Settings().state.user_ttl_s + 1) == ["a"]
    assert engine.users_held == 0
    residency.arrive({"a": 2})  # back, from another partition now
    assert source.reads[-1] == ({3}, {"a"}) and engine.users_held == 1
    residency.forget(["a"])
    assert residency.release([2]) == 0  # forgotten: not held for that partition any more
