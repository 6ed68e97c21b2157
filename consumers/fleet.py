"""``interest fleet -n N``: run and supervise N worker processes on one machine.

With shared item knowledge (``items.shared``, the default) the fleet also runs
``--aggregators`` item aggregators (``interest aggregate``, default 1), the item-keyed
stage, supervised the same way; their status lines follow the workers'.

Each worker is a child process (``python -m consumers.cli worker --worker-id fleet-i
--metrics-port P+i``) in its own process group, so Ctrl-C reaches the supervisor only
and the supervisor decides how the children stop: SIGTERM to each group, a grace
period, then SIGKILL. A worker that dies is started again after an exponential
back-off (1 s, 2 s, 4 s ... capped), and the back-off resets once it has stayed up for
a while. The supervisor scrapes each worker's ``/metrics`` for a one-line status:
pid, state, restarts, metrics port, events consumed per second, ready, and, when a
worker exited :data:`CRASH_LOOP_EXITS` times within :data:`CRASH_LOOP_WINDOW_S` seconds,
``crash loop: N exits in T s, last at offset ...`` (offsets from the crash report the
worker writes when its loop fails). A restarted worker is told its restart count
(``interest_worker_restarts_total``) and the crash loop, which its ``/readyz`` names.

With the adaptation layer on (``[adapter] enabled``, the default) the fleet also runs
``--trainers`` trainer processes (``interest trainer``, default 1), supervised the same
way, on the metrics port after the workers' (``fleet-trainer-i``).

The settings a supervisor is given reach the children exactly: ``--config`` is passed
through and any setting that differs from what the children would load on their own
(a test's fresh topic names, say) travels as ``INTEREST__SECTION__KEY`` overrides.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from interest_core.settings import ENV_PREFIX, Settings
from producers.broker import free_ports, port_bindable

__all__ = [
    "Backoff",
    "ExitLog",
    "Fleet",
    "WorkerStatus",
    "format_status",
    "histogram_buckets",
    "histogram_quantile",
    "scrape_metrics",
    "scrape_samples",
    "settings_env",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- settings


def _flatten(settings: Settings) -> dict[tuple[str, str], Any]:
    flat: dict[tuple[str, str], Any] = {}
    for section in dataclasses.fields(settings):
        values = getattr(settings, section.name)
        for item in dataclasses.fields(values):
            flat[(section.name, item.name)] = getattr(values, item.name)
    return flat


def _env_value(value: Any) -> str:
    """A TOML scalar the settings loader reads back as exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string, so "123" stays a string.
    return json.dumps(str(value))


def settings_env(settings: Settings, baseline: Settings) -> dict[str, str]:
    """``INTEREST__SECTION__KEY`` overrides that turn ``baseline`` into ``settings``."""
    wanted, base = _flatten(settings), _flatten(baseline)
    return {
        f"{ENV_PREFIX}{section.upper()}__{key.upper()}": _env_value(value)
        for (section, key), value in wanted.items()
        if base[(section, key)] != value
    }


def _shared_cores_env(settings: Settings, workers: int) -> dict[str, str]:
    """torch's threads for each of ``workers`` on this machine: its cores / workers, unless
    the settings name a number (workers that each take every core slow each other
    several-fold)."""
    if settings.runtime.torch_threads > 0:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return {f"{ENV_PREFIX}RUNTIME__TORCH_THREADS": str(max(1, cores // workers))}


# --------------------------------------------------------------------------- metrics


Sample = tuple[str, dict[str, str], float]


def scrape_samples(url: str, timeout_s: float = 1.0) -> list[Sample]:
    """Every sample at a Prometheus ``/metrics`` URL: ``(name, labels, value)``.

    Raises :class:`OSError` when the endpoint does not answer within ``timeout_s``
    seconds, :class:`ValueError` when the text is not the exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8", "replace")
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape_metrics(url: str, timeout_s: float = 1.0) -> dict[str, float]:
    """Sum of every sample per metric name at a Prometheus ``/metrics`` URL.

    Labels are summed over (``interest_events_consumed_total`` of every type becomes one
    number); do not use it for histogram buckets (see :func:`histogram_buckets`).
    """
    totals: dict[str, float] = {}
    for name, _, value in scrape_samples(url, timeout_s):
        totals[name] = totals.get(name, 0.0) + value
    return totals


def histogram_buckets(samples: Iterable[Sample], name: str) -> dict[float, float]:
    """Cumulative counts by upper bound (``le``) of histogram ``name``, summed over labels.

    Samples of several workers can be passed together: their buckets add up.
    """
    buckets: dict[float, float] = {}
    for sample_name, labels, value in samples:
        if sample_name == f"{name}_bucket" and "le" in labels:
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return buckets


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, interpolated as Prometheus does.

    ``buckets`` maps upper bounds to cumulative counts (see :func:`histogram_buckets`);
    the result is in the histogram's unit. None when it holds no observation. A quantile
    in the ``+Inf`` bucket reports the largest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


# --------------------------------------------------------------------------- supervision


@dataclass
class Backoff:
    """Exponential restart delay in seconds: ``initial_s * 2**n`` capped at ``max_s``.

    ``n`` counts consecutive quick deaths; a worker that stayed up ``stable_after_s``
    seconds starts again from ``initial_s``.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 60.0
    failures: int = 0

    def next_delay(self, uptime_s: float) -> float:
        """Delay before the next start, given how long the last run lasted (seconds)."""
        if uptime_s >= self.stable_after_s:
            self.failures = 0
        delay = min(self.max_s, self.initial_s * (2**self.failures))
        self.failures += 1
        return delay


#: Exits of one worker within :data:`CRASH_LOOP_WINDOW_S` seconds that make a crash loop.
CRASH_LOOP_EXITS = 3
CRASH_LOOP_WINDOW_S = 300.0


@dataclass
class ExitLog:
    """Recent exits of one worker slot: when (monotonic seconds) and where it died (the
    offsets of the batch in hand, from the worker's crash report)."""

    window_s: float = CRASH_LOOP_WINDOW_S
    threshold: int = CRASH_LOOP_EXITS
    exits: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)

    def record(self, at: float, where: str) -> None:
        """Note an exit at monotonic time ``at`` (seconds), ``where`` the worker was."""
        self.exits.append((at, where))
        while len(self.exits) > 64:
            self.exits.popleft()

    def crash_loop(self, now: float) -> str | None:
        """``"crash loop: N exits in T s, last at offset ..."`` when at least ``threshold``
        exits fell within the last ``window_s`` seconds, else None."""
        recent = [(at, where) for at, where in self.exits if now - at <= self.window_s]
        if len(recent) < self.threshold:
            return None
        span = recent[-1][0] - recent[0][0]
        return f"crash loop: {len(recent)} exits in {span:.0f} s, last at offset {recent[-1][1]}"


def _where_it_died(crash_file: Path, returncode: int | None) -> str:
    """The offsets of the worker's crash report (and remove it), else how it ended."""
    try:
        report = json.loads(crash_file.read_text(encoding="utf-8"))
        crash_file.unlink()
    except (OSError, ValueError):
        how = f"signal {-returncode}" if returncode is not None and returncode < 0 else returncode
        return f"unknown (exit {how}, no crash report)"
    offsets = report.get("offsets") or {}
    where = ", ".join(f"{tp}@{offset}" for tp, offset in offsets.items()) or "none in hand"
    return f"{where} ({report.get('error', '?')})"


@dataclass
class WorkerStatus:
    """What the supervisor knows about one worker, for the status line."""

    worker_id: str
    metrics_port: int
    pid: int | None = None
    state: str = "starting"  # starting | running | backoff | stopped | failed
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0  # monotonic seconds
    events_per_s: float | None = None
    events_total: float | None = None
    ready: bool | None = None
    crash_loop: str | None = None  # "crash loop: N exits in T s, last at offset ..."


@dataclass
class _Child:
    status: WorkerStatus
    role: str = "worker"  # worker | trainer | aggregate
    process: subprocess.Popen[bytes] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float = 0.0  # monotonic seconds
    last_scrape: tuple[float, float] | None = None  # (monotonic s, events total)
    exit_log: ExitLog = field(default_factory=ExitLog)
    port_picked: bool = False  # the supervisor picked the metrics port (configured as 0)


@dataclass(frozen=True)
class _Ports:
    ports: list[int]
    picked: bool  # by the supervisor (configured as 0): moved if taken (Fleet.poll)


def _metrics_ports(
    settings: Settings, base: int, processes: int, aggregators: int
) -> tuple[_Ports, _Ports]:
    """The metrics ports of the workers and trainers (``base`` + i), and of the
    aggregators (``items.metrics_port`` + i). "Pick a free port" (0) must still be known
    to the supervisor, so it picks them here; a worker's 0 picks the aggregators' too."""
    items_base = settings.items.metrics_port
    items_picked = base == 0 or items_base == 0
    picked = free_ports(
        (processes if base == 0 else 0) + (aggregators if items_picked else 0),
        settings.metrics.host,
    )
    if base == 0:
        ports, picked = _Ports(picked[:processes], True), picked[processes:]
    else:
        ports = _Ports([base + i for i in range(processes)], False)
    if items_picked:
        return ports, _Ports(picked, True)
    return ports, _Ports([items_base + i for i in range(aggregators)], False)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Fleet:
    """Runs N worker processes and keeps them running.

    ``start()`` launches them; ``poll()`` (called by ``run_forever`` or the background
    thread of ``start_background``) restarts dead ones and refreshes their status;
    ``stop()`` ends them all. Also a context manager.

    On Linux each child gets SIGTERM when the thread that started it ends (the
    parent-death signal follows the thread), so call ``start``/``poll`` from a thread
    that outlives the fleet: the main thread, or the one ``start_background`` makes.
    """

    def __init__(
        self,
        settings: Settings,
        n: int,
        *,
        config_path: str | None = None,
        base_metrics_port: int | None = None,
        worker_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        backoff: Backoff | None = None,
        stop_timeout_s: float = 10.0,
        python: str = sys.executable,
        trainers: int = 0,
        aggregators: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"a fleet needs at least one worker, got {n}")
        if trainers < 0:
            raise ValueError(f"trainers must be >= 0, got {trainers}")
        if aggregators is None:
            aggregators = 1 if settings.items.shared else 0
        from consumers.cli import load_settings

        base = settings.metrics.port if base_metrics_port is None else base_metrics_port
        ports, items_ports = _metrics_ports(settings, base, n + trainers, aggregators)
        self.settings = settings
        self.config_path = config_path
        self.worker_args = list(worker_args)
        self.log_dir = Path(log_dir) if log_dir else None
        self.stop_timeout_s = stop_timeout_s
        self.python = python
        parent_env = dict(os.environ if env is None else env)
        baseline = load_settings(config_path, parent_env)
        self._env = {**parent_env, **settings_env(settings, baseline)}
        self._env.update(_shared_cores_env(settings, n))
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        template = backoff or Backoff()
        self._children = (
            [
                _Child(
                    WorkerStatus(f"fleet-{i}", ports.ports[i]),
                    backoff=dataclasses.replace(template),
                    port_picked=ports.picked,
                )
                for i in range(n)
            ]
            + [
                _Child(
                    WorkerStatus(f"fleet-trainer-{i}", ports.ports[n + i]),
                    backoff=dataclasses.replace(template),
                    role="trainer",
                    port_picked=ports.picked,
                )
                for i in range(trainers)
            ]
            + [
                _Child(
                    WorkerStatus(f"fleet-items-{i}", items_ports.ports[i]),
                    role="aggregate",
                    backoff=dataclasses.replace(template),
                    port_picked=items_ports.picked,
                )
                for i in range(aggregators)
            ]
        )
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._logs: list[IO[bytes]] = []
        self._crash_dir: Path | None = None  # where workers write crash reports

    # -- lifecycle

    @property
    def scrape_host(self) -> str:
        host = self.settings.metrics.host
        return "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host

    def metrics_urls(self, role: str | None = None) -> list[str]:
        """The ``/metrics`` URL of every child (workers, trainers, aggregators), or of those
        of one ``role`` (``worker``, ``trainer`` or ``aggregate``)."""
        return [
            f"http://{self.scrape_host}:{c.status.metrics_port}/metrics"
            for c in self._children
            if role is None or c.role == role
        ]

    def command(self, index: int) -> list[str]:
        """The command line of child ``index`` (workers, then trainers, then aggregators)."""
        child = self._children[index]
        status = child.status
        cmd = [self.python, "-m", "consumers.cli", child.role]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        if child.role != "worker":
            flag = "--trainer-id" if child.role == "trainer" else "--aggregator-id"
            ident = [flag, status.worker_id]
            return [*cmd, *ident, "--metrics-port", str(status.metrics_port), *self.worker_args]
        cmd += ["--worker-id", status.worker_id, "--metrics-port", str(status.metrics_port)]
        cmd += ["--crash-file", str(self._crash_file(index))]
        if status.restarts:
            cmd += ["--restarts", str(status.restarts)]
        if status.crash_loop:
            cmd += ["--crash-loop", status.crash_loop]
        return cmd + self.worker_args

    def _crash_file(self, index: int) -> Path:
        if self._crash_dir is None or not self._crash_dir.is_dir():
            self._crash_dir = Path(tempfile.mkdtemp(prefix="interest-fleet-"))
        return self._crash_dir / f"{self._children[index].status.worker_id}.crash.json"

    def _spawn(self, index: int) -> None:
        child = self._children[index]
        stdout: IO[bytes] | int | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.log_dir / f"{child.status.worker_id}.log", "ab")  # noqa: SIM115
            self._logs.append(handle)
            stdout = handle
        child.process = subprocess.Popen(
            self.command(index),
            cwd=REPO_ROOT,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        child.status.pid = child.process.pid
        child.status.state = "starting"
        child.status.started_at = time.monotonic()
        child.status.ready = None
        child.status.events_per_s = None
        child.last_scrape = None
        log.info("started %s (pid %d)", child.status.worker_id, child.process.pid)

    def start(self) -> Fleet:
        """Launch every worker; returns self."""
        with self._lock:
            self._stopping.clear()
            for i in range(len(self._children)):
                self._spawn(i)
        return self

    def poll(self, scrape: bool = True) -> list[WorkerStatus]:
        """Restart dead workers whose back-off has passed; refresh and return the status."""
        now = time.monotonic()
        with self._lock:
            for i, child in enumerate(self._children):
                if self._stopping.is_set():
                    break
                process = child.process
                if process is not None and process.poll() is not None:
                    uptime = now - child.status.started_at
                    delay = child.backoff.next_delay(uptime)
                    child.status.last_exit = process.returncode
                    where = _where_it_died(self._crash_file(i), process.returncode)
                    child.exit_log.record(now, where)
                    child.status.crash_loop = child.exit_log.crash_loop(now)
                    child.status.state = "backoff"
                    child.status.ready = False
                    child.status.events_per_s = None
                    child.restart_at = now + delay
                    child.process = None
                    log.warning(
                        "%s (pid %s) exited with status %s after %.1f s at %s; restarting in %.1f s",
                        child.status.worker_id,
                        child.status.pid,
                        process.returncode,
                        uptime,
                        where,
                        delay,
                    )
                    if child.status.crash_loop:
                        log.error("%s: %s", child.status.worker_id, child.status.crash_loop)
                elif child.status.crash_loop and not child.exit_log.crash_loop(now):
                    child.status.crash_loop = None  # the window passed without more exits
                if (
                    child.process is None
                    and child.status.state == "backoff"
                    and now >= child.restart_at
                ):
                    child.status.restarts += 1
                    self._move_if_taken(child)
                    self._spawn(i)
        if scrape:
            self._scrape_all()
        return self.statuses()

    def _move_if_taken(self, child: _Child) -> None:
        """A picked port another process took while its child was down goes to a new one.

        A child that cannot bind its metrics port exits at start; restarting it on the
        same port would loop for as long as the other process holds it (an outgoing
        connection's local port, say). A port given by configuration stays: that is the
        operator's to fix, and the crash-loop line says why.
        """
        host = self.settings.metrics.host
        if not child.port_picked or port_bindable(host, child.status.metrics_port):
            return
        old = child.status.metrics_port
        child.status.metrics_port = free_ports(1, host)[0]
        log.warning(
            "%s: port %d is taken by another process; its /metrics moves to %d",
            child.status.worker_id,
            old,
            child.status.metrics_port,
        )

    def _scrape_all(self) -> None:
        for child in self._children:
            if child.process is None:
                continue
            url = f"http://{self.scrape_host}:{child.status.metrics_port}/metrics"
            try:
                totals = scrape_metrics(url, timeout_s=0.5)
            except (OSError, ValueError):
                continue  # not serving yet (model loading) or busy: keep the last values
            now = time.monotonic()
            consumed = totals.get(
                "interest_events_consumed_total", totals.get("interest_trainer_events_total", 0.0)
            )
            ready = totals.get("interest_ready")
            with self._lock:
                if child.status.state == "starting":
                    child.status.state = "running"
                child.status.ready = None if ready is None else ready >= 1.0
                child.status.events_total = consumed
                if child.last_scrape is not None and now > child.last_scrape[0]:
                    then, before = child.last_scrape
                    child.status.events_per_s = max(0.0, consumed - before) / (now - then)
                child.last_scrape = (now, consumed)

    def statuses(self) -> list[WorkerStatus]:
        """A copy of every worker's status."""
        with self._lock:
            return [dataclasses.replace(c.status) for c in self._children]

    def processes(self) -> list[subprocess.Popen[bytes] | None]:
        """The live child processes (None for a worker in back-off)."""
        with self._lock:
            return [c.process for c in self._children]

    def start_background(self, interval_s: float = 1.0) -> Fleet:
        """``start()`` and supervise from a daemon thread every ``interval_s`` seconds."""
        self.start()

        def loop() -> None:
            while not self._stopping.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # one bad poll must not end supervision
                    log.exception("fleet supervision step failed")

        self._thread = threading.Thread(target=loop, name="fleet-supervisor", daemon=True)
        self._thread.start()
        return self

    def run_forever(
        self,
        interval_s: float = 1.0,
        stop: threading.Event | None = None,
        out: IO[str] | None = None,
        log_every_s: float = 10.0,
    ) -> None:
        """Supervise until ``stop`` is set, showing status on ``out``.

        On a terminal the status lines are redrawn in place every ``interval_s`` seconds;
        otherwise they are logged every ``log_every_s`` seconds.
        """
        stop = stop or threading.Event()
        tty = bool(out is not None and out.isatty())
        drawn = 0
        last_log = 0.0
        while not stop.is_set():
            statuses = self.poll()
            lines = [format_status(s) for s in statuses]
            if tty and out is not None:
                if drawn:
                    out.write(f"\x1b[{drawn}F")  # cursor up to the first status line
                for line in lines:
                    out.write("\x1b[2K" + line + "\n")
                out.flush()
                drawn = len(lines)
            elif time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                for line in lines:
                    if out is None:
                        log.warning("%s", line)
                    else:
                        out.write(line + "\n")
                if out is not None:
                    out.flush()
            stop.wait(interval_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM every worker's process group, wait, then SIGKILL what is left."""
        timeout = self.stop_timeout_s if timeout_s is None else timeout_s
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            live = [c for c in self._children if c.process is not None]
            for child in live:
                _signal_group(child.process, signal.SIGTERM)  # type: ignore[arg-type]
            deadline = time.monotonic() + timeout
            for child in live:
                process = child.process
                assert process is not None
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "%s (pid %d) ignored SIGTERM for %.0f s; killing it",
                        child.status.worker_id,
                        process.pid,
                        timeout,
                    )
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
                # Anything the worker left in its group goes too.
                _signal_group(process, signal.SIGKILL)
                child.status.last_exit = process.returncode
                child.status.state = "stopped"
                child.status.ready = False
                child.status.events_per_s = None
                child.process = None
            for child in self._children:
                if child.status.state == "backoff":
                    child.status.state = "stopped"
            for handle in self._logs:
                with contextlib.suppress(OSError):
                    handle.close()
            self._logs.clear()
            if self._crash_dir is not None:
                shutil.rmtree(self._crash_dir, ignore_errors=True)
                self._crash_dir = None

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def format_status(status: WorkerStatus) -> str:
    """One line: ``fleet-0  pid 1234  running  restarts 0  :9400  812.3 ev/s  ready``."""
    rate = "   - ev/s" if status.events_per_s is None else f"{status.events_per_s:7.1f} ev/s"
    ready = {None: "?", True: "ready", False: "not ready"}[status.ready]
    exit_note = "" if status.last_exit is None else f"  last exit {status.last_exit}"
    loop_note = f"  {status.crash_loop}" if status.crash_loop else ""
    return (
        f"{status.worker_id:<8} pid {status.pid or '-':>7}  {status.state:<8}  "
        f"restarts {status.restarts:<2}  :{status.metrics_port}  {rate}  {ready}{exit_note}"
        f"{loop_note}"
    )


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--trainers",
        type=int,
        default=None,
        help="adaptation-layer trainers (interest trainer) beside the workers "
        "(default: 1 when [adapter] enabled, else 0)",
    )
    parser.add_argument(
        "--aggregators",
        type=int,
        default=None,
        help="item aggregators (interest aggregate) to run beside the workers "
        "(default: 1 with items.shared, else 0)",
    )
    parser.add_argument(
        "--base-metrics-port",
        type=int,
        help="worker i serves /metrics on this port + i (default: metrics.port)",
    )
    parser.add_argument(
        "--log-dir", help="write each worker's output to DIR/fleet-i.log (default: this terminal)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds a worker gets to stop after SIGTERM before SIGKILL (default 10)",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between status refreshes"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        print("interest fleet: -n must be at least 1", file=sys.stderr)
        return 2
    partitions = settings.topics.events_partitions
    if args.workers > partitions:
        print(
            f"interest fleet: warning: {args.workers} workers but {partitions} event partitions; "
            f"{args.workers - partitions} will stay idle",
            file=sys.stderr,
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet = Fleet(
        settings,
        args.workers,
        config_path=args.config,
        base_metrics_port=args.base_metrics_port,
        log_dir=args.log_dir,
        stop_timeout_s=args.stop_timeout,
        worker_args=["--log-level", args.log_level],
        trainers=(1 if settings.adapter.enabled else 0) if args.trainers is None else args.trainers,
        aggregators=args.aggregators,
    )
    print(
        f"starting {args.workers} workers (each loads the model and encodes the catalog "
        "first: a minute or more on a few CPU cores); Ctrl-C stops them",
        flush=True,
    )
    try:
        fleet.start()
        fleet.run_forever(interval_s=args.interval, stop=stop, out=sys.stdout)
    finally:
        print("stopping the fleet...", flush=True)
        fleet.stop()
    for status in fleet.statuses():
        print(format_status(status))
    return 0
