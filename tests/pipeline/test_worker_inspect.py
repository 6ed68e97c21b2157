"""``interest inspect``'s decoding: state blobs as the worker writes them, read back."""

from __future__ import annotations

from collections import Counter

import orjson
from prometheus_client import CollectorRegistry

from consumers.inspect import _text, describe_entry
from consumers.state_store import StateEntry
from consumers.testing import MemorySink, RecordFeed, catalog_records
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings
from tests.data_paths import movielens_log, needs_movielens

pytestmark = needs_movielens


def _settings() -> Settings:
    return Settings().replace(encoder={"backend": "hashing"})


def test_inspect_decodes_what_the_worker_wrote() -> None:
    catalog, events = movielens_log(users=5, per_user=8)
    settings = _settings()
    sink = MemorySink()
    worker = Worker(settings, HashingEncoder(), worker_id="t", registry=CollectorRegistry())
    worker.apply_catalog_records(catalog_records(settings.topics.catalog, catalog))
    feed = RecordFeed(settings.topics.events, settings.topics.events_partitions)
    worker.handle(feed.events(events), sink)
    user = events[0]["user_id"]
    blob = sink.latest(settings.topics.state)[user]
    assert blob is not None
    described = describe_entry(StateEntry(user, 1, blob, offset=7), settings)
    expected = Counter(e["type"] for e in events if e["user_id"] == user)
    assert described["events_by_type"] == dict(expected)
    assert described["version"] == 1
    assert described["last_event_ts"] == max(e["ts"] for e in events if e["user_id"] == user)
    assert described["interests"] and described["slots"]
    assert described["state_offset"] == 7 and described["deleted"] is False
    text = _text(described)
    assert f"user {user}" in text and "events applied" in text
    orjson.dumps(described)  # JSON-serialisable for --json


def test_inspect_reports_deleted_and_garbage() -> None:
    settings = _settings()
    assert describe_entry(StateEntry("u1", 0, None, 3), settings)["deleted"] is True
    broken = describe_entry(StateEntry("u2", 0, b"not a state", 4), settings)
    assert broken["error"].startswith("undecodable state")
    assert "deleted" in _text(describe_entry(StateEntry("u1", 0, None, 3), settings))
