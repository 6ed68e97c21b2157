"""The worker process's interpreter settings: the collector policy keeps old objects out
of full collections, yet a periodic complete pass still reclaims cycles among them."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from consumers.runtime import CollectorPolicy, tune_interpreter
from interest_core.settings import RuntimeSettings, Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """A reference cycle (``self.me = self``): only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()
    gc.unfreeze()


def test_survivors_of_a_full_collection_are_left_out_of_the_next(clock: Clock) -> None:
    policy = CollectorPolicy(600.0, clock=clock).install()
    try:
        gc.collect()
        assert gc.get_freeze_count() > 0
        assert policy.full_collections == 1
        assert policy.complete_passes == 1
        # A cycle frozen while alive is not reclaimed by the next full collections...
        node = Node()
        gc.collect()
        watch = weakref.ref(node)
        del node
        gc.collect()
        assert watch() is not None
        assert policy.complete_passes == 1
        # ...until the period is over: that collection thaws, the next one scans it all.
        clock.now += 600.0
        gc.collect()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert watch() is None
        assert policy.complete_passes == 2
        assert gc.get_freeze_count() > 0  # and the survivors are frozen again
    finally:
        policy.uninstall()
    assert policy not in gc.callbacks
    assert gc.get_freeze_count() == 0


def test_a_new_cycle_is_still_collected_while_old_objects_are_frozen(clock: Clock) -> None:
    policy = CollectorPolicy(600.0, clock=clock).install()
    try:
        gc.collect()
        node = Node()
        watch = weakref.ref(node)
        del node
        gc.collect()  # the young cycle was never frozen
        assert watch() is None
    finally:
        policy.uninstall()


def test_tune_interpreter_sets_the_switch_interval_and_the_collector() -> None:
    before = sys.getswitchinterval()
    policy = tune_interpreter(RuntimeSettings(switch_interval_ms=0.5, full_gc_every_s=60.0))
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert policy is not None and policy in gc.callbacks
    finally:
        sys.setswitchinterval(before)
        if policy is not None:
            policy.uninstall()
    # 0: CPython's default collector, nothing installed.
    try:
        assert tune_interpreter(RuntimeSettings(full_gc_every_s=0.0)) is None
    finally:
        sys.setswitchinterval(before)


def test_tune_interpreter_sets_torch_threads_in_a_process_that_uses_torch() -> None:
    import torch

    before_threads, before_switch = torch.get_num_threads(), sys.getswitchinterval()
    try:
        tune_interpreter(RuntimeSettings(torch_threads=1, full_gc_every_s=0.0))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        tune_interpreter(RuntimeSettings(torch_threads=0, full_gc_every_s=0.0))
        assert torch.get_num_threads() == 2  # 0: left as it is
    finally:
        torch.set_num_threads(before_threads)
        sys.setswitchinterval(before_switch)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("switch_interval_ms", 0),
        ("switch_interval_ms", -1),
        ("full_gc_every_s", -5),
        ("torch_threads", -1),
    ],
)
def test_runtime_settings_are_checked(key: str, value: float) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings().replace(runtime={key: value})


def test_a_policy_needs_a_positive_period() -> None:
    with pytest.raises(ValueError, match="full_every_s"):
        CollectorPolicy(0.0)


def test_the_policy_does_not_count_the_frozen_objects(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gc.get_freeze_count() walks every frozen object (tens of milliseconds in a worker
    # holding the encoder); the policy knows what it froze without asking.
    policy = CollectorPolicy(600.0, clock=clock).install()
    try:

        def walk() -> int:
            raise AssertionError("the policy walked the frozen objects")

        monkeypatch.setattr(gc, "get_freeze_count", walk)
        gc.collect()
        gc.collect()
        clock.now += 600.0
        gc.collect()  # thaws
        gc.collect()  # a complete pass again
        assert (policy.full_collections, policy.complete_passes) == (4, 2)
    finally:
        monkeypatch.undo()
        policy.uninstall()


def test_settling_freezes_what_a_process_loaded_before_it_serves(clock: Clock) -> None:
    """A worker settles its collector after loading (model, catalog) and before its
    first event: its first full collection in service then scans only newer objects."""
    policy = CollectorPolicy(600.0, clock=clock).install()
    try:
        loaded = [Node() for _ in range(1000)]  # what a worker holds from its start
        policy.settle()
        assert gc.get_freeze_count() >= len(loaded)
        assert policy.full_collections == 1 and policy.complete_passes == 1
        gc.collect()  # in service: nothing loaded is scanned again
        assert policy.complete_passes == 1
    finally:
        policy.uninstall()
