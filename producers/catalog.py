"""``interest catalog load FILE``: publish a catalog (JSONL) to the catalog topic.

Each line is validated with the contract's catalog parser and its original bytes are
sent keyed by ``item_id``, in file order (a later line for the same item wins). A
record with ``"deleted": true`` is sent as is; the workers treat it as a deletion. A
malformed line is reported and skipped (or sent anyway with ``--send-invalid``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from interest_core.records import Rejected, parse_catalog
from interest_core.settings import Settings
from producers.jsonl import best_effort_key, read_lines
from producers.kafka_client import describe_kafka_error
from producers.publish import Publisher, PublishSummary, bulk_producer
from producers.topics import missing_topic_warning

__all__ = ["configure", "load_catalog", "run"]

log = logging.getLogger(__name__)


def load_catalog(
    path: str | Path,
    settings: Settings,
    *,
    send_invalid: bool = False,
    progress: bool | None = None,
    producer: KafkaProducer | None = None,
) -> PublishSummary:
    """Publish the catalog file at ``path`` to ``settings.topics.catalog``; returns the summary.

    ``progress`` shows a bar on stderr (None: only when stderr is a terminal). A
    ``producer`` may be passed in (flushed, not closed). Raises ``OSError`` when the file
    cannot be read; send failures are counted in the summary, never raised.
    """
    summary = PublishSummary(topic=settings.topics.catalog)
    own = producer is None
    active = producer if producer is not None else bulk_producer(settings)
    publisher = Publisher(active, summary)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(unit="item", file=sys.stderr, disable=not show, mininterval=0.5)
    max_chars = 4 * settings.limits.max_text_chars
    started = time.monotonic()
    try:
        for line_no, line in read_lines(path):
            summary.lines += 1
            parsed = parse_catalog(None, line, max_text_chars=max_chars)
            if isinstance(parsed, Rejected):
                summary.reject(line_no, parsed.reason, parsed.detail)
                if send_invalid:
                    publisher.send(best_effort_key(line, "item_id"), line)
                    summary.invalid_sent += 1
                continue
            publisher.send(parsed.item_id.encode("utf-8"), line)
            bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        publisher.finish()
        summary.elapsed_s = time.monotonic() - started
        bar.close()
        if own:
            active.close()
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = sub.add_parser("load", help="publish a catalog JSONL file, keyed by item_id")
    load.add_argument("file", metavar="FILE", help="catalog, one JSON item per line")
    load.add_argument(
        "--send-invalid",
        action="store_true",
        help="also send lines that fail validation (to exercise the dead-letter path)",
    )
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    # Accept the common options after ACTION too (`catalog load FILE --config X`).
    load.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    load.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        missing = missing_topic_warning(settings, settings.topics.catalog)
        if missing:
            print(f"interest catalog load: warning: {missing}", file=sys.stderr)
        summary = load_catalog(
            args.file,
            settings,
            send_invalid=args.send_invalid,
            progress=False if args.quiet else None,
        )
    except OSError as exc:
        print(f"interest catalog load: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"interest catalog load: {describe_kafka_error(settings, exc)}", file=sys.stderr)
        return 1
    print(summary.report())
    if not summary.ok:
        return 1
    if summary.sent == 0 and not summary.interrupted:
        why = "every line is invalid" if summary.lines else "the file holds no items"
        print(f"interest catalog load: nothing sent: {why}", file=sys.stderr)
        return 1
    return 130 if summary.interrupted else 0
