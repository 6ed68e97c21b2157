"""No broker at the configured address: one clear line with a hint, and a prompt stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from producers.broker import free_port

pytestmark = pytest.mark.integration


def _env(bootstrap_timeout_ms: int) -> dict[str, str]:
    return {
        **os.environ,
        "INTEREST__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nobody listens
        "INTEREST__KAFKA__BOOTSTRAP_TIMEOUT_MS": str(bootstrap_timeout_ms),
        "INTEREST__ENCODER__BACKEND": "hashing",
        "INTEREST__METRICS__PORT": "0",
    }


@pytest.mark.parametrize(
    "command",
    [["topics", "create"], ["subscribe", "--max", "1"], ["inspect", "u1"], ["worker"]],
)
def test_each_command_says_it_cannot_reach_kafka_and_what_to_do(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consumers.cli", *command],
        env=_env(1000),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert "cannot reach Kafka at 127.0.0.1:" in err
    assert "`interest broker`" in err and "INTEREST__KAFKA__BOOTSTRAP_SERVERS" in err
    assert "Traceback" not in err
    # kafka-python's own connection errors stay quiet at the default level
    assert "kafka.conn" not in err and "kafka.net" not in err, err


def test_a_worker_still_connecting_stops_on_sigterm_without_waiting_for_the_timeout() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "worker"],
        env=_env(600_000),  # it would try to connect for ten minutes
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    banner = worker.stderr.readline()  # printed once the worker is built, before connecting
    assert banner.startswith("interest worker "), banner
    worker.send_signal(signal.SIGTERM)
    try:
        status = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # Still running: SIGUSR1 makes it print every thread's stack (faulthandler).
        worker.send_signal(signal.SIGUSR1)
        time.sleep(3)
        worker.kill()
        worker.wait()
        stacks = worker.stderr.read()[-6000:]
        raise AssertionError(f"no exit 60 s after SIGTERM; its threads:\n{stacks}") from None
    finally:
        worker.kill()
    assert status == 0
    assert "stopped by signal 15 while starting" in worker.stderr.read()


def test_sigusr1_prints_every_thread_stack_and_the_worker_goes_on() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "worker"],
        env=_env(600_000),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    try:
        assert worker.stderr.readline().startswith("interest worker ")
        worker.send_signal(signal.SIGUSR1)
        lines = [worker.stderr.readline() for _ in range(2)]
        assert any(line.startswith(("Thread 0x", "Current thread 0x")) for line in lines), lines
        assert worker.poll() is None  # a dump, not a stop
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()


def test_a_worker_whose_metrics_port_is_taken_says_so_without_a_traceback() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "consumers.cli", "worker"],
            env={**_env(1000), "INTEREST__METRICS__PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}: the port is taken" in done.stderr
    assert "INTEREST__METRICS__PORT" in done.stderr and "Traceback" not in done.stderr
