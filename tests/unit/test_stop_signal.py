"""A stop that lands while the process is still connecting ends it, even when the first
raise is swallowed (as Python does with an exception raised in a collector callback)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# A process "still connecting" (a loop of short waits) whose collector callback runs
# Python code: the SIGTERM is sent while the callback runs, so the handler's first raise
# lands in it and is dropped ("Exception ignored in ...").
SCRIPT = textwrap.dedent(
    """
    import gc, os, signal, sys, threading, time
    from consumers.stop_signal import StoppedWhileStarting, StopSignals

    stop = threading.Event()
    signals = StopSignals(stop, starting=lambda: True, redeliver_s=REDELIVER).install()
    inside = threading.Event()

    def callback(phase, info):
        if phase == "stop" and not inside.is_set():
            inside.set()
            until = time.monotonic() + 0.5
            while time.monotonic() < until:  # the signal is handled in here
                pass

    gc.callbacks.append(callback)
    threading.Thread(
        target=lambda: (inside.wait(), os.kill(os.getpid(), signal.SIGTERM)), daemon=True
    ).start()
    try:
        gc.collect()
        while True:  # connecting
            time.sleep(0.01)
    except StoppedWhileStarting as stopped:
        signals.caught()
        print("stopped by", stopped.args[0], "after the stop was set:", stop.is_set())
    """
)


def run_script(redeliver_s: float, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("REDELIVER", repr(redeliver_s))],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parents[2],  # the repository: `consumers` imports
    )


def test_a_stop_swallowed_in_a_collector_callback_is_delivered_again() -> None:
    done = run_script(redeliver_s=0.2, timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" in done.stderr  # the first raise was indeed dropped
    assert done.stdout.strip() == "stopped by 15 after the stop was set: True"
