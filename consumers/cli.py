"""The ``interest`` command line: one console script, one subcommand per job.

Each subcommand lives in its own module, imported only when it runs (so ``--help`` stays
fast and does not load torch). A command module exposes::

    def configure(parser: argparse.ArgumentParser) -> None   # add its arguments
    def run(args: argparse.Namespace, settings: Settings) -> int   # exit status

Every subcommand reads the same configuration: ``--config PATH`` (else the
``INTEREST_CONFIG`` environment variable, else ``configs/default.toml``), then
``INTEREST__SECTION__KEY`` environment overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from interest_core.settings import (
    Settings,
    SettingsError,
    settings_from,
    unmatched_env_variables,
)

__all__ = ["COMMANDS", "load_settings", "main"]

log = logging.getLogger(__name__)

#: name -> (module, one-line help). Order is the order ``interest --help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("producers.broker", "start the embedded Kafka-compatible broker on 127.0.0.1"),
    "topics": ("producers.topics", "manage the topics (`topics create`)"),
    "convert": ("producers.movielens", "convert a dataset (`convert movielens DIR`)"),
    "generate": ("producers.synthetic", "write a synthetic catalog and drifting event log"),
    "catalog": ("producers.catalog", "publish a catalog (`catalog load FILE`)"),
    "replay": ("producers.replay", "publish an event log in timestamp order"),
    "worker": ("consumers.worker", "run one worker of the fleet"),
    "aggregate": ("consumers.item_aggregator", "run one item aggregator (the item-keyed stage)"),
    "fleet": ("consumers.fleet", "run and supervise N workers and the item aggregation"),
    "subscribe": ("consumers.subscribe", "print recommendations as they arrive"),
    "inspect": ("consumers.inspect", "print what the system holds about a user"),
    "trainer": ("consumers.trainer", "train the adaptation layer on the stream, publish versions"),
    "eval": (
        "consumers.harness.evaluate",
        "prequential evaluation of the recommenders on an event log",
    ),
    "bench": (
        "consumers.harness.bench",
        "measure throughput and latency of the pipeline and its stages",
    ),
    "demo": ("consumers.harness.demo", "the whole system on one machine, no setup"),
}

#: ``INTEREST_*`` variables read outside the settings (the rest must be INTEREST__S__K).
OWN_VARIABLES = ("INTEREST_CONFIG", "INTEREST_LOG_LEVEL", "INTEREST_SHARED_DATA")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.toml"


def load_settings(
    path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None
) -> Settings:
    """Read the TOML configuration at ``path`` (or the default) and apply env overrides."""
    env = dict(os.environ if environ is None else environ)
    chosen = (
        Path(path) if path else Path(env["INTEREST_CONFIG"]) if env.get("INTEREST_CONFIG") else None
    )
    if chosen is None:
        chosen = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    toml: dict[str, object] = {}
    if chosen is not None:
        try:
            toml = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"configuration file not found: {chosen}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{chosen}: {exc}") from exc
    return settings_from(toml, env)


def _common(*, top_level: bool) -> argparse.ArgumentParser:
    """``--config`` and ``--log-level``, accepted before and after the subcommand.

    Only the top-level parser holds the defaults: argparse copies every attribute a
    subparser sets over the top level's, so a subparser default would silently undo
    ``interest --config X worker``. The subparsers' copies are therefore SUPPRESSed
    (set only when given, and then the later position wins).
    """
    common = argparse.ArgumentParser(add_help=False)
    config_default = None if top_level else argparse.SUPPRESS
    level_default = (
        os.environ.get("INTEREST_LOG_LEVEL", "WARNING") if top_level else argparse.SUPPRESS
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        default=config_default,
        help="TOML configuration (default: $INTEREST_CONFIG, else configs/default.toml)",
    )
    common.add_argument(
        "--log-level",
        default=level_default,
        type=_log_level,
        help="logging level: DEBUG, INFO, WARNING (default), ERROR",
    )
    return common


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r} (DEBUG, INFO, WARNING, ERROR or CRITICAL)"
        )
    return level


class _NotAvailable:
    def __init__(self, name: str, error: ImportError) -> None:
        self.name, self.error = name, error

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace, settings: Settings) -> int:
        print(f"interest {self.name}: not available yet ({self.error})", file=sys.stderr)
        return 2


def _load_command(name: str) -> object:
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return _NotAvailable(name, exc)
        raise


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """The argument parser; only the selected subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="interest",
        description="interest-stream: real-time user-interest capture and recommendations on Kafka.",
        parents=[_common(top_level=True)],
    )
    common = _common(top_level=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name == selected:
            module = _load_command(name)
            module.configure(child)  # type: ignore[attr-defined]
            child.set_defaults(_module=module)
    return parser


def quiet_kafka_client(level: str) -> None:
    """Keep kafka-python's connection chatter out of sight unless asked for (DEBUG/INFO).

    An unreachable broker makes the client log a traceback-laden error per attempt; the
    command itself reports the outage in one line with a hint, so at the default level
    only the client's CRITICAL records pass.
    """
    if str(level).upper() not in {"DEBUG", "INFO"}:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interest`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_kafka_client(args.log_level)
    if hasattr(signal, "SIGUSR1"):
        # `kill -USR1 <pid>`: every thread's stack to stderr (a stuck process says where).
        # Not where stderr is no file (called in-process with captured output).
        with contextlib.suppress(OSError, ValueError, AttributeError):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    for warning in unmatched_env_variables(os.environ, OWN_VARIABLES):
        print(f"interest: warning: {warning}", file=sys.stderr)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"interest: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`interest subscribe | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
