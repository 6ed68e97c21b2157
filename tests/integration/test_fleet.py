"""The fleet supervisor on the embedded broker: a killed worker comes back, stop is clean."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.fleet import Backoff, Fleet
from interest_core.settings import Settings
from producers.topics import create_topics

pytestmark = pytest.mark.integration


def _eventually(check: Callable[[], bool], fleet: Fleet, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.poll()
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}; statuses: {fleet.statuses()}")


def _group_members(group: int) -> list[tuple[int, str]]:
    """The live processes of process group ``group``: pid and command line."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = (Path("/proc") / entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == group:  # zombies too: killpg still finds them
                command = (Path("/proc") / entry / "cmdline").read_bytes()
                members.append((int(entry), command.replace(b"\0", b" ").decode()[:200]))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return members


def test_a_killed_worker_is_restarted_and_stop_ends_every_worker(
    kafka_settings: Settings, tmp_path
) -> None:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    create_topics(settings)
    fleet = Fleet(
        settings,
        2,
        base_metrics_port=0,
        log_dir=tmp_path,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stop_timeout_s=15.0,
        trainers=1,
    )
    assert fleet.command(2)[3:4] == ["trainer"]  # workers first, then the trainer
    fleet.start()
    seen = []
    try:
        # "running" = the worker serves /metrics (the supervisor scraped it).
        _eventually(
            lambda: all(s.state == "running" for s in fleet.statuses()),
            fleet,
            120.0,
            "the workers never served /metrics",
        )
        first = fleet.processes()
        seen.extend(p for p in first if p is not None)
        victim = first[0]
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        _eventually(
            lambda: (
                fleet.statuses()[0].restarts == 1
                and fleet.statuses()[0].state == "running"
                and fleet.statuses()[0].pid != victim.pid
            ),
            fleet,
            120.0,
            "the killed worker did not come back",
        )
        status = fleet.statuses()[0]
        assert status.last_exit == -signal.SIGKILL
        assert fleet.statuses()[1].restarts == 0
        seen.extend(p for p in fleet.processes() if p is not None)
    finally:
        fleet.stop()
        log_tail = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
    assert all(s.state == "stopped" for s in fleet.statuses())
    for process in seen:
        assert process.poll() is not None, f"pid {process.pid} still running"
        # Nothing left in its process group either. A worker's children (its reader and
        # publisher processes) end on their own once the pipe to it closes, after what
        # they hold is delivered: the SIGKILLed one's orphans, and on a loaded machine a
        # stopped one's, may take a few seconds more.
        deadline = time.monotonic() + 30.0
        while _group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_members(process.pid), (process.pid, _group_members(process.pid))
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    # A worker stopped by SIGTERM exits on its own (status 0), not by SIGKILL.
    last = [p for p in seen if p.pid != victim.pid]
    assert all(p.returncode == 0 for p in last), (
        [(p.pid, p.returncode) for p in last],
        log_tail,
    )
