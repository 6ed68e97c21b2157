"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, in a daemon thread.

The server knows nothing about workers: it is given a function that renders the
metrics and two probes. ``/healthz`` answers 200 while the liveness probe says the
loop is alive; ``/readyz`` answers 200 when the readiness probe says ready, else 503
with a JSON body saying why (``{"ready": false, "reasons": ["catalog loading"]}``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import orjson

__all__ = ["HealthServer"]

log = logging.getLogger(__name__)

#: () -> (body, content type) of the Prometheus text exposition.
RenderMetrics = Callable[[], tuple[bytes, str]]
#: () -> reasons it is not alive / not ready; empty when it is.
Probe = Callable[[], Sequence[str]]


class HealthServer:
    """A small HTTP server for metrics and probes; ``port`` 0 binds a free port.

    ``start()`` binds and serves in a daemon thread; ``port`` is then the bound port.
    ``stop()`` shuts it down. Usable as a context manager.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        render_metrics: RenderMetrics,
        liveness: Probe,
        readiness: Probe,
    ) -> None:
        self.host = host
        self.requested_port = port
        self._render_metrics = render_metrics
        self._liveness = liveness
        self._readiness = readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the requested one until started)."""
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9400``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> HealthServer:
        """Bind and serve in a daemon thread; raises ``OSError`` if the port is taken."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.requested_port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"health-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("metrics and health on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        body, content_type = outer._render_metrics()
                        self._reply(200, body, content_type)
                    elif path == "/healthz":
                        self._probe(outer._liveness(), "alive")
                    elif path == "/readyz":
                        self._probe(outer._readiness(), "ready")
                    else:
                        self._reply(404, b'{"error": "not found"}', "application/json")
                except Exception as exc:  # a probe must answer, whatever broke
                    log.exception("health endpoint %s failed", path)
                    body = orjson.dumps({"error": type(exc).__name__, "detail": str(exc)[:200]})
                    self._reply(500, body, "application/json")

            def _probe(self, reasons: Sequence[str], word: str) -> None:
                ok = not reasons
                body = orjson.dumps({word: ok, "reasons": list(reasons)})
                self._reply(200 if ok else 503, body, "application/json")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return Handler
