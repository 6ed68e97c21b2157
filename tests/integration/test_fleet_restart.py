"""A whole fleet stopped and started again on the same broker, same group, gets back to work.

Regression test for the embedded broker's stale group leader (see
consumers/group_membership.py): when the leader left while another member had just left,
every later member waited for an assignment that never came. The fleet is stopped twice,
its two workers one after the other in both orders, so one of the two stops has the
leader leaving last whichever worker led. After each restart every partition must be
assigned and processing (committed offsets reach the end of each partition, which has
new events), and at the end each user's state counts every event exactly once.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from consumers import inspect as inspect_command
from consumers.barrier import place_barriers
from consumers.fleet import Backoff, Fleet
from interest_core.settings import Settings
from producers.catalog import load_catalog
from producers.replay import replay
from producers.synthetic import generate
from producers.topics import create_topics

pytestmark = pytest.mark.integration

# A guard against hanging for ever, not a speed claim: progress is what is asserted.
GIVE_UP_S = 240.0


def _eventually(check: Callable[[], bool], fleet: Fleet, what: str) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        fleet.poll(scrape=False)
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}; statuses: {fleet.statuses()}")


def _committed(settings: Settings) -> dict[int, int]:
    """The workers' group's committed offset per events partition."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        topic = settings.topics.events
        tps = [TopicPartition(topic, p) for p in range(settings.topics.events_partitions)]
        group = settings.consumer.group_id
        return {
            tp.partition: meta.offset
            for tp, meta in admin.list_group_offsets({group: tps})[group].items()
            if meta.offset >= 0
        }
    finally:
        admin.close()


def _mark_the_end(settings: Settings) -> dict[int, int]:
    """One marker after the replayed events on each partition; its offset per partition.

    The embedded broker hides the tail of a partition's last batch until another batch
    lands (docs/GUARANTEES.md), so "caught up" is judged against a marker written after
    the events: a worker that committed past it has processed everything before it (the
    marker itself is not an event and is dead-lettered).
    """
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        partitions = range(settings.topics.events_partitions)
        return place_barriers(producer, settings.topics.events, partitions, timeout_s=30)
    finally:
        producer.close()


def _split(events_path: Path, parts: int, out: Path) -> list[Path]:
    """The event log cut into ``parts`` consecutive files (the log is in time order)."""
    lines = events_path.read_bytes().splitlines()
    size = -(-len(lines) // parts)
    paths = []
    for i in range(parts):
        path = out / f"part{i}.jsonl"
        path.write_bytes(b"\n".join(lines[i * size : (i + 1) * size]) + b"\n")
        paths.append(path)
    return paths


def _fleet(settings: Settings, log_dir: Path) -> Fleet:
    return Fleet(
        settings,
        2,
        base_metrics_port=0,
        log_dir=log_dir,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stop_timeout_s=30.0,
        worker_args=["--log-level", "INFO"],
    )


def _stop_one_after_the_other(fleet: Fleet, first: int) -> None:
    """SIGTERM worker ``first`` and wait for it to leave, then stop the rest."""
    process = fleet.processes()[first]
    assert process is not None
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0, "a worker stopped by SIGTERM exits 0"
    fleet.stop()
    assert all(s.last_exit == 0 for s in fleet.statuses()), fleet.statuses()


def test_a_stopped_fleet_comes_back_on_the_same_broker_and_applies_nothing_twice(
    kafka_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    create_topics(settings)
    data = generate(tmp_path / "data", users=40, items=80, events=900, seed=3)
    assert load_catalog(data.catalog_path, settings, progress=False).ok
    parts = _split(data.events_path, 3, tmp_path)
    expected = Counter(
        orjson.loads(line)["user_id"] for line in data.events_path.read_bytes().splitlines()
    )
    partitions = range(settings.topics.events_partitions)
    previous: dict[int, int] = {}

    for cycle, part in enumerate(parts):
        fleet = _fleet(settings, tmp_path / f"logs{cycle}")
        fleet.start()
        try:
            summary = replay(part, settings, progress=False)
            assert summary.ok and summary.sent > 0
            markers = _mark_the_end(settings)
            assert all(markers[p] > previous.get(p, -1) + 1 for p in partitions), (
                "every partition must get new events in each part",
                previous,
                markers,
            )
            previous = markers

            def caught_up(markers: dict[int, int] = markers) -> bool:
                committed = _committed(settings)
                return all(committed.get(p, -1) > markers[p] for p in partitions)

            _eventually(
                caught_up,
                fleet,
                f"cycle {cycle}: not every partition was assigned and processed after "
                f"{'a restart' if cycle else 'the start'}; committed {_committed(settings)},"
                f" markers {markers}",
            )
        finally:
            if cycle < len(parts) - 1:
                _stop_one_after_the_other(fleet, first=cycle % 2)
            else:
                fleet.stop()

    # What the state topic holds, through `interest inspect --all --json` (JSON Lines).
    capsys.readouterr()
    args = argparse.Namespace(all=True, user=None, json=True, include_deleted=False)
    assert inspect_command.run(args, settings) == 0
    lines = capsys.readouterr().out.splitlines()
    users = [orjson.loads(line) for line in lines]  # one JSON object per line
    applied = {u["user_id"]: sum(u["events_by_type"].values()) for u in users}
    assert applied == dict(expected), "each event applied exactly once across the restarts"
