"""``interest subscribe``: print recommendations as they arrive.

A group-less reader over every partition of the recommendations topic (it commits
nothing and disturbs no one), from the end by default or from the beginning. Filters by
user; stops after ``--max`` records, after ``--timeout`` seconds without a record, or on
Ctrl-C. A tombstone (null value) means the user was deleted and is shown as such.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from interest_core.records import (
    CatalogItem,
    Recommendation,
    Rejected,
    parse_catalog,
    parse_recommendation,
)
from interest_core.settings import Settings
from producers.jsonl import read_lines
from producers.kafka_client import describe_kafka_error, make_consumer

__all__ = [
    "Received",
    "configure",
    "format_received",
    "open_reader",
    "read_titles",
    "run",
    "subscribe",
]

log = logging.getLogger(__name__)

_POLL_MS = 200


@dataclass(frozen=True)
class Received:
    """One record read from the recommendations topic.

    ``record`` is the parsed recommendation, None for a tombstone (user deleted), or a
    :class:`Rejected` for a value that is not a recommendation. ``raw`` is the value bytes.
    """

    user_id: str
    record: Recommendation | Rejected | None
    raw: bytes | None
    partition: int
    offset: int

    @property
    def deleted(self) -> bool:
        return self.raw is None


def open_reader(
    settings: Settings, *, from_beginning: bool = False, wait_s: float = 10.0
) -> KafkaConsumer:
    """A group-less consumer assigned every partition of the recommendations topic.

    Positioned at the beginning or at the end of each partition. Waits up to ``wait_s``
    seconds for the topic to exist; raises ``KafkaError`` subclasses when the cluster
    cannot be reached and ``LookupError`` when the topic never appears.
    """
    topic = settings.topics.recommendations
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + wait_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist (run `interest topics create`)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the end now, so records sent from here on are seen
                consumer.position(tp)
    except BaseException:
        consumer.close()
        raise
    return consumer


def subscribe(
    consumer: KafkaConsumer,
    *,
    user: str | None = None,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
) -> Iterator[Received]:
    """Yield records from an assigned ``consumer`` (see :func:`open_reader`).

    Only ``user``'s records when given. Stops after ``max_records`` records yielded, or
    after ``idle_timeout_s`` seconds (wall clock) without a matching record.
    """
    yielded = 0
    last_seen = time.monotonic()
    while max_records is None or yielded < max_records:
        batches = consumer.poll(timeout_ms=_POLL_MS)
        got = False
        for records in batches.values():
            for message in records:
                received = _decode(message.key, message.value, message.partition, message.offset)
                if user is not None and received.user_id != user:
                    continue
                got = True
                yield received
                yielded += 1
                if max_records is not None and yielded >= max_records:
                    return
        now = time.monotonic()
        if got:
            last_seen = now
        elif idle_timeout_s is not None and now - last_seen >= idle_timeout_s:
            return


def _decode(key: bytes | None, value: bytes | None, partition: int, offset: int) -> Received:
    key_text = key.decode("utf-8", "replace") if key is not None else ""
    if value is None:
        return Received(key_text, None, None, partition, offset)
    record = parse_recommendation(value)
    user_id = record.user_id if isinstance(record, Recommendation) else key_text
    return Received(user_id or key_text, record, value, partition, offset)


#: Seconds: a record published later than this after its event time is from a replayed
#: (historical) log, and its event-time latency is not shown.
LIVE_LAG_S = 600.0


def waiting_line(settings: Settings, args: argparse.Namespace) -> str:
    """What ``subscribe`` is waiting for, said once on stderr before the first record."""
    whom = f"user {args.user}" if args.user else "every user"
    where = (
        f"from the beginning of {settings.topics.recommendations}"
        if args.from_beginning
        else f"published from now on to {settings.topics.recommendations}"
        " (--from-beginning shows earlier ones)"
    )
    ends = []
    if args.max is not None:
        ends.append(f"after {args.max} record{'s' if args.max != 1 else ''}")
    if args.timeout is not None:
        ends.append(f"after {args.timeout:g} s without one")
    until = "exits " + " or ".join(ends) if ends else "Ctrl-C stops"
    return f"interest subscribe: waiting for recommendations for {whom}, {where}; {until}"


def _when(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"
    except (OverflowError, OSError, ValueError):
        return f"{ts}"


def format_received(received: Received, titles: Mapping[str, str] | None = None) -> str:
    """A readable, multi-line rendering of one record (titles: item_id -> title, optional)."""
    record = received.record
    if received.deleted:
        return f"{received.user_id}  DELETED (tombstone: every recommendation for this user is withdrawn)"
    if isinstance(record, Rejected) or record is None:
        reason = record.reason if isinstance(record, Rejected) else "empty"
        return f"{received.user_id}  unreadable record at partition {received.partition} offset {received.offset}: {reason}"
    lag = record.published_at - record.event_ts
    # Event time to publish is a latency only for live events; a replayed log carries
    # event times from the past, and the difference is then the log's age.
    latency = f"  (+{lag:.2f} s to publish)" if 0 <= lag <= LIVE_LAG_S else ""
    head = (
        f"{record.user_id}  v{record.version}  event {_when(record.event_ts)}"
        f"{latency}  trigger {record.trigger_event_id or '-'}"
    )
    lines = [head]
    extras = []
    if record.interests:
        extras.append(
            "interests: " + ", ".join(f"{i.label} {i.weight:.2f}" for i in record.interests)
        )
    if record.intent is not None:
        extras.append(f"intent: {record.intent.label} ({record.intent.confidence:.2f})")
    if extras:
        lines.append("  " + " | ".join(extras))
    for rank, item in enumerate(record.items, start=1):
        title = titles.get(item.item_id) if titles else None
        name = f"{item.item_id} {title!r}" if title else item.item_id
        reason = f"  {item.reason}" if item.reason else ""
        lines.append(f"  {rank:2d}. {item.score:6.3f}  {name}{reason}")
    if not record.items:
        lines.append("  (no items)")
    return "\n".join(lines)


def read_titles(path: str | Path) -> dict[str, str]:
    """item_id -> title from a catalog JSONL file (invalid lines are ignored)."""
    titles: dict[str, str] = {}
    for _line_no, line in read_lines(path):
        parsed = parse_catalog(None, line)
        if isinstance(parsed, CatalogItem):
            titles[parsed.item_id] = parsed.title
    return titles


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="U", help="only this user's recommendations")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start from the oldest record kept"
    )
    parser.add_argument("--max", type=int, metavar="N", help="exit after N records")
    parser.add_argument("--json", action="store_true", help="print raw records, one per line")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="exit after S seconds without a record"
    )
    parser.add_argument(
        "--catalog", metavar="FILE", help="catalog JSONL, to show item titles next to their ids"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max is not None and args.max < 1:
        print("interest subscribe: --max must be at least 1", file=sys.stderr)
        return 2
    titles: dict[str, str] = {}
    if args.catalog:
        try:
            titles = read_titles(args.catalog)
        except OSError as exc:
            print(f"interest subscribe: cannot read {args.catalog}: {exc}", file=sys.stderr)
            return 2
    try:
        consumer = open_reader(settings, from_beginning=args.from_beginning)
    except KafkaError as exc:
        print(f"interest subscribe: {describe_kafka_error(settings, exc)}", file=sys.stderr)
        return 1
    except LookupError as exc:
        print(f"interest subscribe: {settings.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    print(waiting_line(settings, args), file=sys.stderr, flush=True)
    try:
        for received in subscribe(
            consumer, user=args.user, max_records=args.max, idle_timeout_s=args.timeout
        ):
            if args.json:
                if received.raw is None:
                    line = orjson.dumps({"user_id": received.user_id, "tombstone": True}).decode()
                else:
                    line = received.raw.decode("utf-8", "replace")
                print(line, flush=True)
            else:
                print(format_received(received, titles), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
