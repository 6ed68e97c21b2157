"""The worker's reader process (``consumers.read_ahead``) on the embedded broker: it reads
the partitions it is told from the offsets it is told, and it does not outlive a worker
killed without a chance to stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from consumers.read_ahead import start_reader
from interest_core.settings import Settings
from producers.kafka_client import make_producer
from producers.topics import create_topics
from tests.integration.survival import wait_until

pytestmark = pytest.mark.integration


def _produce(settings: Settings, count: int) -> None:
    """One record a batch: the embedded broker hides a batch's tail until the next write
    (tests/integration/test_crash.py)."""
    producer = make_producer(settings)
    for i in range(count):
        producer.send(settings.topics.events, key=b"u", value=b"%d" % i, partition=i % 2).get(30)
    producer.close()


def test_the_reader_reads_what_it_is_told_from_where_it_is_told(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    _produce(kafka_settings, 20)  # offsets 0-9 on partitions 0 and 1
    conn, process = start_reader(kafka_settings, client_id="test-reader")
    try:
        conn.send(("read", 7, {0: 4}))
        seen: list[tuple[int, int, bytes]] = []
        while len(seen) < 6:
            assert conn.poll(30.0), "the reader sent nothing"
            kind, epoch, _, rows, _ = conn.recv()
            assert (kind, epoch) == ("records", 7)
            seen += [(partition, offset, value) for partition, offset, _, value, _, _ in rows]
        assert seen == [(0, o, b"%d" % (2 * o)) for o in range(4, 10)]
    finally:
        conn.send(None)
        process.join(10)
    assert process.exitcode == 0


def test_a_killed_worker_leaves_no_reader_behind(kafka_settings: Settings) -> None:
    """The child sees its pipe close and exits (it would otherwise poll for ever)."""
    create_topics(kafka_settings)
    script = textwrap.dedent(
        f"""
        import sys, time
        from consumers.read_ahead import start_reader
        from interest_core.settings import Settings
        settings = Settings().replace(
            kafka={{"bootstrap_servers": {kafka_settings.kafka.bootstrap_servers!r}}},
            topics={{"events": {kafka_settings.topics.events!r}}},
        )
        conn, process = start_reader(settings, client_id="doomed")
        conn.send(("read", 1, {{0: 0, 1: 0}}))
        print(process.pid, flush=True)
        time.sleep(600)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert worker.stdout is not None
        reader_pid = int(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)

        def gone() -> bool:
            try:
                os.kill(reader_pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{reader_pid}/stat", encoding="ascii") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, unreaped

        wait_until(gone, 30.0, "the reader process exits")
    finally:
        if worker.poll() is None:
            worker.kill()
