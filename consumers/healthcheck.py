"""``python -m consumers.healthcheck``: the container HEALTHCHECK of a worker.

Reads the same settings the worker reads (``INTEREST_CONFIG``, then
``INTEREST__SECTION__KEY`` overrides) and asks the worker's ``/healthz`` on
``metrics.port``, so the probe follows the port wherever it is configured. Exit status
0 when it answers 200 within ``--timeout`` seconds, 1 otherwise, with the reason on
stderr (Docker keeps the last lines in ``docker inspect``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from consumers.cli import load_settings
from interest_core.settings import Settings, SettingsError

__all__ = ["healthz_url", "main"]

_ANY_ADDRESS = {"", "0.0.0.0", "::"}


def healthz_url(settings: Settings) -> str:
    """The worker's ``/healthz`` URL as seen from inside its own container.

    A wildcard bind (``0.0.0.0``, ``::``) is asked on the loopback address. Raises
    ``ValueError`` when the settings give no fixed port to probe (metrics disabled, or
    port 0, which picks a free port at start).
    """
    metrics = settings.metrics
    if not metrics.enabled:
        raise ValueError("metrics.enabled is false: the worker serves no /healthz")
    if metrics.port == 0:
        raise ValueError("metrics.port is 0 (a free port at start): nothing fixed to probe")
    host = metrics.host
    if host in _ANY_ADDRESS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{metrics.port}/healthz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.healthcheck", description="probe a worker's /healthz"
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration (default: as worker)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    try:
        url = healthz_url(load_settings(args.config))
    except (SettingsError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
