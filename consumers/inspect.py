"""``interest inspect USER``: what the system holds about a user, read from the state topic.

Reads the compacted state topic with no consumer group, from the beginning to the end
offsets seen at start (latest value per key wins; a null value means the user was
deleted), and decodes each blob with the state's own deserialisation
(``UserState.from_bytes``) and :func:`interest_core.describe.describe_state`, at the
user's own last event time. There is no catalog here, so slots are shown by weight; interest labels, event counts by type, last event time,
version, recent items and texts all come from the state itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka.errors import KafkaError

from consumers.state_store import StateEntry, StateReader
from interest_core.settings import Settings

__all__ = ["configure", "describe_blob", "describe_entry", "run"]

log = logging.getLogger(__name__)


def describe_blob(user_id: str, blob: bytes, settings: Settings) -> dict[str, Any]:
    """Decode one state blob into :func:`~interest_core.describe.describe_state`'s dict.

    Raises ``interest_core.interest.StateFormatError`` when the blob is not a user state.
    """
    from interest_core.describe import describe_state
    from interest_core.interest import UserState

    state = UserState.from_bytes(blob)
    state.user_id = user_id
    return describe_state(state, settings.model)


def describe_entry(entry: StateEntry, settings: Settings) -> dict[str, Any]:
    """One state-topic entry as a dict: deleted users and undecodable blobs say so."""
    base: dict[str, Any] = {
        "user_id": entry.user_id,
        "partition": entry.partition,
        "state_offset": entry.offset,
    }
    if entry.blob is None:
        return {**base, "deleted": True}
    try:
        return {**base, "deleted": False, **describe_blob(entry.user_id, entry.blob, settings)}
    except ValueError as exc:  # StateFormatError and friends
        return {**base, "deleted": False, "error": f"undecodable state: {exc}"}


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{datetime.fromtimestamp(ts, UTC).isoformat(timespec='seconds')} ({ts:.1f})"


def _text(d: dict[str, Any]) -> str:
    if d.get("deleted"):
        return f"user {d['user_id']}: deleted (tombstone at state offset {d['state_offset']})"
    if "error" in d:
        return f"user {d['user_id']}: {d['error']}"
    lines = [
        f"user {d['user_id']}  version {d['version']}  partition {d['partition']}"
        f"  state offset {d['state_offset']}  ({d['state_bytes']} bytes)",
        f"  last event      {_when(d['last_event_ts'])}",
        "  events applied  "
        + (", ".join(f"{k} {v}" for k, v in d["events_by_type"].items()) or "none"),
        "  interests       "
        + (", ".join(f"{i['label']} {i['weight']:.2f}" for i in d["interests"]) or "none yet"),
        f"  intent          {d['intent']['label']} ({d['intent']['confidence']:.2f})",
        f"  short-term      freshness {d['short_term_freshness']:.2f}",
    ]
    for n, slot in enumerate(d["slots"], 1):
        labels = f"  [{', '.join(slot['labels'])}]" if slot["labels"] else ""
        lines.append(f"  slot {n}          weight {slot['weight']:.3f}{labels}")
    if d["recent_items"]:
        lines.append(
            "  recent items    "
            + ", ".join(f"{r['action']} {r['item_id']}" for r in d["recent_items"][-5:])
        )
    if d["recent_texts"]:
        lines.append("  recent texts    " + " | ".join(t[:60] for t in d["recent_texts"][-3:]))
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest inspect``."""
    parser.add_argument("user", nargs="?", help="user id to show")
    parser.add_argument("--all", action="store_true", help="every user on the state topic")
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
    parser.add_argument(
        "--include-deleted", action="store_true", help="with --all, list deleted users too"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the state of one user (exit 1 if none or deleted) or of every user."""
    if not args.all and not args.user:
        print("interest inspect: give a USER or --all", file=sys.stderr)
        return 2
    reader = StateReader(settings)
    try:
        entries = reader.read(users=None if args.all else [args.user])
    except KafkaError as exc:
        print(
            f"interest inspect: cannot read {settings.topics.state} at"
            f" {settings.kafka.bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        reader.close()
    if args.all:
        chosen = sorted(entries.values(), key=lambda e: e.user_id)
        if not args.include_deleted:
            chosen = [e for e in chosen if e.blob is not None]
        described = [describe_entry(e, settings) for e in chosen]
        if args.json:
            sys.stdout.write(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for d in described:
                print(_text(d))
            print(f"{len(described)} users", file=sys.stderr)
        return 0
    entry = entries.get(args.user)
    if entry is None:
        print(f"interest inspect: no state for user {args.user!r}", file=sys.stderr)
        return 1
    d = describe_entry(entry, settings)
    if args.json:
        sys.stdout.write(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(_text(d))
    return 1 if entry.blob is None else 0
