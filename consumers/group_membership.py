"""Leaving the consumer group on close without wedging the embedded broker's group.

The embedded broker (Tansu 0.6.0) has a group-coordinator bug: when the group's leader
sends LeaveGroup while the group is already rebalancing ("forming": another member left
or joined a moment before), the leader's member id is removed from the members but kept
as the group's leader. Every member that joins afterwards is told that leader, none of
them is elected, nobody sends the assignment, and each SyncGroup ends after the
rebalance timeout with REBALANCE_IN_PROGRESS ("SyncGroup ... failed due to coordinator
rebalance"), for ever: a fleet stopped as a whole (its members leave one after the
other) never gets its partitions back on the same broker under the same group id.
(``tansu-broker/src/coordinator/group/administrator.rs``: ``Inner<Forming>::leave``
does not clear ``state.leader``; ``Inner<Formed>::leave`` and the forming state's
missed-heartbeat path do.)

The workaround: on that broker, a worker that is (or may be, mid-rebalance) the leader
does not send LeaveGroup. Its membership then ends by session expiry
(``consumer.session_timeout_ms``), which is the path that clears the leader, and the
next member to join is elected. The cost is that the old leader's partitions move
``session_timeout_ms`` later than they would have; members that are not the leader,
and every member on a real Kafka cluster, still leave at once.
"""

from __future__ import annotations

import logging
import random
from typing import Any

__all__ = [
    "JOINING_POLL_MS",
    "broker_is_tansu",
    "close_group_consumer",
    "group_poll_ms",
    "leave_would_wedge_group",
    "rebalancing",
]

#: Range (ms) a group consumer's poll waits, drawn afresh each time, while it owns no
#: partition or its group rebalances (see :func:`group_poll_ms`).
JOINING_POLL_MS = (250, 750)

log = logging.getLogger(__name__)


def broker_is_tansu(consumer: Any) -> bool:
    """True when the cluster the consumer talks to identifies itself as Tansu.

    Tansu reports its ``--cluster-id`` (``tansu_cluster`` unless changed, and the embedded
    broker never changes it) in metadata responses.
    """
    cluster_id = getattr(getattr(consumer, "_client", None), "cluster", None)
    cluster_id = getattr(cluster_id, "cluster_id", None)
    return isinstance(cluster_id, str) and "tansu" in cluster_id.lower()


def leave_would_wedge_group(consumer: Any) -> bool:
    """True when sending LeaveGroup now could leave a stale leader on the broker.

    That is: the broker is Tansu and this member is the leader of its current
    generation, or is mid-rebalance (the broker may still hold it as leader while the
    client has already forgotten it was).
    """
    from kafka.structs import MemberState

    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not broker_is_tansu(consumer):
        return False
    if not coordinator._generation.has_member_id():
        return False  # never joined: nothing to leave
    return bool(coordinator._is_leader) or coordinator.state is not MemberState.STABLE


def close_group_consumer(consumer: Any, *, timeout_ms: int | None = None) -> bool:
    """Close a group consumer (no auto-commit); returns True when it left the group.

    Where :func:`leave_would_wedge_group` holds, the LeaveGroup request is skipped and
    the membership ends by session expiry instead (see the module docstring).
    """
    leave = not leave_would_wedge_group(consumer)
    if not leave:
        coordinator = consumer._coordinator
        log.info(
            "not sending LeaveGroup (group leader on the embedded broker): the membership "
            "ends by session expiry in %d ms",
            coordinator.config["session_timeout_ms"],
        )

        async def _forget_membership(reason: str | None = None, timeout_ms: Any = None) -> None:
            coordinator.reset_generation()

        # kafka-python has no option to close without leaving (only static members skip
        # it), so this one close replaces the leave step with forgetting the generation.
        coordinator.maybe_leave_group_async = _forget_membership
    consumer.close(autocommit=False, timeout_ms=timeout_ms)
    return leave


def group_poll_ms(consumer: Any, idle_ms: int) -> int:
    """How long a group consumer's next poll may wait when nothing is in hand: ``idle_ms``
    while it owns partitions in a stable group; while it owns none (joining the group) or
    its group is rebalancing, a long poll of random length from :data:`JOINING_POLL_MS`.

    kafka-python 3.0 runs the JoinGroup / SyncGroup round as a task that ``poll`` awaits
    for at most its timeout. A round that completes while no poll is waiting on it is
    thrown away and a new JoinGroup sent (``join_group_async`` starts a new attempt when
    the previous one ``is_done``): the member rejoins, and the whole group rebalances
    again. The broker holds a JoinGroup until every member has joined or the rebalance
    timeout (``max_poll_interval_ms``) is up, so a round often lasts exactly that long,
    and polls of a fixed length that divides it (10, 100 or 500 ms against 3,000) keep
    ending at the very moment the round completes. Long polls of random length cover it;
    while nothing is owned there is nothing else to wait for (without a join in
    progress, an unassigned consumer's poll returns after ``retry_backoff_ms``).
    """
    if consumer.assignment() and not rebalancing(consumer):
        return idle_ms
    return random.randint(*JOINING_POLL_MS)


def rebalancing(consumer: Any) -> bool:
    """True while the consumer's group membership is not stable (a join round under way).

    Under the eager protocol a member keeps its old partitions in ``assignment()`` until
    the new round's assignment replaces them, so the assignment alone does not say it.
    """
    from kafka.structs import MemberState

    state = getattr(getattr(consumer, "_coordinator", None), "state", MemberState.STABLE)
    return state is not MemberState.STABLE
