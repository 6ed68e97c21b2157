"""Which members skip LeaveGroup: only the (possible) leader, only on the embedded broker."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka.structs import MemberState

from consumers.group_membership import (
    JOINING_POLL_MS,
    close_group_consumer,
    group_poll_ms,
    leave_would_wedge_group,
)


class FakeConsumer:
    """The few kafka-python attributes the decision reads, and a close that records."""

    def __init__(self, cluster_id: str, *, leader: bool, state: MemberState, joined: bool = True):
        self._client = SimpleNamespace(cluster=SimpleNamespace(cluster_id=cluster_id))
        left: list[str] = []
        self.left = left

        async def maybe_leave_group_async(reason=None, timeout_ms=None):
            left.append("LeaveGroup")

        self._coordinator = SimpleNamespace(
            _generation=SimpleNamespace(has_member_id=lambda: joined),
            _is_leader=leader,
            state=state,
            config={"session_timeout_ms": 6000},
            maybe_leave_group_async=maybe_leave_group_async,
            reset_generation=lambda: left.append("forgotten"),
        )

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        import asyncio

        asyncio.run(self._coordinator.maybe_leave_group_async())


@pytest.mark.parametrize(
    ("cluster_id", "leader", "state", "joined", "wedges"),
    [
        ("tansu_cluster", True, MemberState.STABLE, True, True),
        ("tansu_cluster", False, MemberState.REBALANCING, True, True),
        ("tansu_cluster", False, MemberState.STABLE, True, False),
        ("tansu_cluster", True, MemberState.STABLE, False, False),
        ("kafka-prod-7Hq", True, MemberState.STABLE, True, False),
    ],
)
def test_only_a_possible_leader_on_tansu_skips_the_leave(
    cluster_id: str, leader: bool, state: MemberState, joined: bool, wedges: bool
) -> None:
    consumer = FakeConsumer(cluster_id, leader=leader, state=state, joined=joined)
    assert leave_would_wedge_group(consumer) is wedges
    assert close_group_consumer(consumer) is (not wedges)
    assert consumer.left == (["forgotten"] if wedges else ["LeaveGroup"])


class Owning:
    def __init__(self, partitions: set[int], state: MemberState = MemberState.STABLE) -> None:
        self.partitions = partitions
        self._coordinator = SimpleNamespace(state=state)

    def assignment(self) -> set[int]:
        return self.partitions


def test_a_member_that_owns_nothing_polls_long_and_not_in_step_with_the_join() -> None:
    # kafka-python throws away a join round that completes between two polls; the broker
    # often completes it after exactly the rebalance timeout, so fixed polls that divide
    # that timeout keep missing it. While nothing is owned the polls are long and vary.
    low, high = JOINING_POLL_MS
    waits = {group_poll_ms(Owning(set()), 10) for _ in range(200)}
    assert all(low <= w <= high for w in waits)
    assert len(waits) > 20  # drawn afresh each time, not one fixed period
    assert low >= 100  # covers most of a round: the time between polls is milliseconds


def test_a_member_that_owns_partitions_polls_as_the_loop_asks() -> None:
    assert group_poll_ms(Owning({0, 1}), 10) == 10
    assert group_poll_ms(Owning({3}), 200) == 200


def test_a_member_whose_group_rebalances_polls_long_though_it_still_lists_partitions() -> None:
    # Eager rebalancing: the old partitions stay listed until the new round assigns.
    low, high = JOINING_POLL_MS
    for state in (MemberState.REBALANCING, MemberState.UNJOINED):
        assert low <= group_poll_ms(Owning({0, 1}, state), 10) <= high
