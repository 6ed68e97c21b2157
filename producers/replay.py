"""``interest replay FILE``: publish an event log (JSONL) to the events topic in time order.

Every line is validated with the contract's parser; valid events are sorted by event
time (stable, so equal times keep file order) and their *original bytes* are sent keyed
by ``user_id``. Pacing: as fast as possible (default), ``--rate N`` events per second,
or ``--speed X`` times real time. ``--retime`` stamps each valid event with the time it
is sent (its ``ts`` rewritten, the rest of the record kept), so an old log looks live:
the demo in docker-compose.yml uses it. A malformed line is reported (line number and reason)
and skipped, or, with ``--send-invalid``, sent anyway so the dead-letter path can be
exercised. Nothing valid is lost: acks=all, idempotent producer, every future checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from interest_core.records import Rejected, parse_event
from interest_core.settings import Settings
from producers.jsonl import best_effort_key, read_lines
from producers.publish import Publisher, PublishSummary, bulk_producer

__all__ = ["ReplayPlan", "configure", "plan_replay", "replay", "retimed", "run"]

log = logging.getLogger(__name__)

# Sleep only when this far ahead of schedule (seconds); finer sleeps cost more than they pace.
_MIN_SLEEP_S = 0.002
_PROGRESS_EVERY = 1000


@dataclass
class ReplayPlan:
    """The records to send, in send order: ``(event_ts, key, original_line)``.

    ``invalid`` holds the positions in ``records`` of lines that failed validation (kept
    only with ``send_invalid``).
    """

    records: list[tuple[float, bytes | None, bytes]]
    summary: PublishSummary
    invalid: frozenset[int] = field(default_factory=frozenset)


def plan_replay(path: str | Path, settings: Settings, *, send_invalid: bool = False) -> ReplayPlan:
    """Read and validate an event log; returns the records in timestamp order.

    Invalid lines are counted in the summary with their reasons. With ``send_invalid``
    they are kept too, at the event time of the last valid line before them, keyed by a
    best-effort ``user_id`` (or no key). Raises ``OSError`` if the file cannot be read.
    """
    summary = PublishSummary(topic=settings.topics.events)
    name = Path(path).name
    entries: list[tuple[float, bytes | None, bytes, bool]] = []
    last_ts = 0.0
    limits = settings.limits
    for line_no, line in read_lines(path):
        summary.lines += 1
        parsed = parse_event(
            line,
            fallback_id=f"{name}:{line_no}",
            max_text_chars=limits.max_text_chars,
            max_record_bytes=limits.max_record_bytes,
        )
        if isinstance(parsed, Rejected):
            summary.reject(line_no, parsed.reason, parsed.detail)
            if send_invalid:
                entries.append((last_ts, best_effort_key(line, "user_id"), line, False))
            continue
        last_ts = parsed.ts
        entries.append((parsed.ts, parsed.user_id.encode("utf-8"), line, True))
    entries.sort(key=itemgetter(0))  # list.sort is stable: ties keep file order
    records = [(ts, key, line) for ts, key, line, _ in entries]
    invalid = frozenset(i for i, entry in enumerate(entries) if not entry[3])
    return ReplayPlan(records, summary, invalid)


def retimed(line: bytes, ts: float) -> bytes:
    """A valid event line with its ``ts`` replaced by ``ts`` (unix seconds, ms precision).

    Only for lines that passed validation (a JSON object); other keys keep their order
    and values.
    """
    event = orjson.loads(line)
    event["ts"] = round(ts, 3)
    return orjson.dumps(event)


def replay(
    path: str | Path,
    settings: Settings,
    *,
    rate: float | None = None,
    speed: float | None = None,
    send_invalid: bool = False,
    retime: bool = False,
    progress: bool | None = None,
    producer: KafkaProducer | None = None,
) -> PublishSummary:
    """Publish the event log at ``path`` to ``settings.topics.events``; returns the summary.

    ``rate`` is events per second; ``speed`` multiplies real time (2.0: twice as fast as
    the events happened); neither: as fast as possible. ``retime`` stamps each valid
    event with the wall-clock time it is sent (invalid lines go as they are). ``progress`` shows a bar on
    stderr (None: only when stderr is a terminal). A ``producer`` may be passed in (it is
    flushed, not closed); otherwise one is made and closed. Ctrl-C stops sending, and
    what was sent is still flushed and checked (``summary.interrupted``).
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive (events per second)")
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive (times real time)")
    plan = plan_replay(path, settings, send_invalid=send_invalid)
    summary = plan.summary
    own = producer is None
    active = producer if producer is not None else bulk_producer(settings)
    publisher = Publisher(active, summary)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=len(plan.records), unit="ev", file=sys.stderr, disable=not show, mininterval=0.5
    )
    first_ts = plan.records[0][0] if plan.records else 0.0
    started = time.monotonic()
    valid_sent = 0
    try:
        for index, (ts, key, line) in enumerate(plan.records):
            if rate is not None:
                due = index / rate
            elif speed is not None:
                due = (ts - first_ts) / speed
            else:
                due = 0.0
            ahead = due - (time.monotonic() - started)
            if ahead > _MIN_SLEEP_S:
                bar.update(index - bar.n)
                time.sleep(ahead)
            if retime and index not in plan.invalid:
                line = retimed(line, time.time())
            publisher.send(key, line)
            valid_sent += 1
            if index % _PROGRESS_EVERY == 0:
                bar.update(index - bar.n)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted after %d records; flushing what was sent", valid_sent)
    finally:
        publisher.finish()
        summary.elapsed_s = time.monotonic() - started
        bar.update(summary.sent - bar.n)
        bar.close()
        if own:
            active.close()
    summary.invalid_sent = summary.rejected_total if send_invalid else 0
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="event log, one JSON event per line")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="N", help="send N events per second")
    pace.add_argument(
        "--speed", type=float, metavar="X", help="send at X times the speed the events happened"
    )
    parser.add_argument(
        "--send-invalid",
        action="store_true",
        help="also send lines that fail validation (to exercise the dead-letter path)",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help="stamp each event with the time it is sent (an old log replayed as live traffic)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        summary = replay(
            args.file,
            settings,
            rate=args.rate,
            speed=args.speed,
            send_invalid=args.send_invalid,
            retime=args.retime,
            progress=False if args.quiet else None,
        )
    except OSError as exc:
        print(f"interest replay: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"interest replay: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(
            f"interest replay: cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(summary.report())
    if not summary.ok:
        return 1
    return 130 if summary.interrupted else 0
