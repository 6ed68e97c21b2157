"""A worker that keeps dying is shown as a crash loop by ``interest fleet``, with where
it died (from the crash report its failing loop writes)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from consumers.fleet import Backoff, Fleet, format_status
from interest_core.settings import Settings

pytestmark = pytest.mark.integration


def test_a_worker_dying_at_every_start_is_reported_as_a_crash_loop(
    kafka_settings: Settings, tmp_path
) -> None:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    # Its metrics port is taken: the worker loop fails at every start, after it began.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    fleet = Fleet(
        settings,
        1,
        base_metrics_port=0,
        log_dir=tmp_path,
        worker_args=["--metrics-port", str(port)],
        backoff=Backoff(initial_s=0.1, max_s=0.2),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    fleet.start()
    try:
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline and fleet.statuses()[0].crash_loop is None:
            fleet.poll(scrape=False)
            time.sleep(0.2)
        status = fleet.statuses()[0]
        assert status.crash_loop is not None, (status, fleet.command(0))
        line = format_status(status)
        assert "crash loop: 3 exits in " in line
        # The worker's own crash report says where and why.
        assert "last at offset none in hand (OSError" in line, line
        # The restarted worker is told the loop and its restarts.
        command = fleet.command(0)
        assert command[command.index("--crash-loop") + 1] == status.crash_loop
        assert int(command[command.index("--restarts") + 1]) >= 2
    finally:
        fleet.stop()
        taken.close()
