"""The worker's batch step with no broker: records in, state and recommendations out.

The same ``Worker.process_records`` / ``publish`` the Kafka loop runs, fed MovieLens
records (``../shared/data/movielens-small``) and publishing to a :class:`MemorySink`
(like Quix's ``sdf.test()``). The hashing encoder keeps it fast.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.batching import InputRecord
from consumers.bounded import record_bytes
from consumers.testing import MemorySink, MemoryStateSource, RecordFeed, catalog_records
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.records import parse_recommendation
from interest_core.settings import Settings
from tests.data_paths import MOVIELENS_SMALL, movielens_log, needs_movielens

MOVIELENS = MOVIELENS_SMALL
PARTITIONS = 4

pytestmark = needs_movielens


def _settings() -> Settings:
    return Settings().replace(
        encoder={"backend": "hashing"},
        topics={"events_partitions": PARTITIONS, "state_partitions": PARTITIONS},
    )


def batches(records: list[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def make_worker(settings: Settings, catalog: list[dict], sink: MemorySink | None = None) -> Worker:
    state = MemoryStateSource(sink, settings.topics.state, PARTITIONS) if sink is not None else None
    worker = Worker(
        settings,
        HashingEncoder(),
        worker_id="test-worker",
        registry=CollectorRegistry(),
        state_source=state,
    )
    worker.apply_catalog_records(catalog_records(settings.topics.catalog, catalog))
    return worker


def counts_by_user(events: list[dict]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for e in events:
        out.setdefault(e["user_id"], Counter())[e["type"]] += 1
    return out


def metric(worker: Worker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


@pytest.fixture(scope="module")
def log_data() -> tuple[list[dict], list[dict]]:
    return movielens_log()


def test_records_in_recommendations_out(log_data: tuple[list[dict], list[dict]]) -> None:
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink()
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    records = feed.events(events)
    plans = [worker.handle(chunk, sink) for chunk in batches(records, 40)]

    # one recommendation per touched user per batch, versions counting publications
    for plan, chunk in zip(plans, batches(records, 40), strict=True):
        users = [r.key.decode() for r in plan.recommendations]
        assert len(users) == len(set(users))
        assert set(users) == {r.key.decode() for r in chunk}
        assert plan.offsets == {
            (settings.topics.events, p): max(r.offset for r in chunk if r.partition == p) + 1
            for p in {r.partition for r in chunk}
        }
    recs = [parse_recommendation(r.value) for r in sink.on(settings.topics.recommendations)]
    by_user: dict[str, list[int]] = {}
    for rec in recs:
        assert not hasattr(rec, "reason"), rec  # every record parses
        by_user.setdefault(rec.user_id, []).append(rec.version)
        assert rec.items and all(worker.engine.has_item(i.item_id) for i in rec.items)
        assert rec.model == "hashing"
    assert set(by_user) == {e["user_id"] for e in events}
    assert all(v == list(range(1, len(v) + 1)) for v in by_user.values())

    # the state topic holds every user; its counts are the log's, applied once
    expected = counts_by_user(events)
    latest_state = sink.latest(settings.topics.state)
    assert set(latest_state) == set(expected)
    for user, counts in expected.items():
        assert worker.engine.describe_user(user)["events_by_type"] == dict(counts)
    assert not sink.on(settings.topics.deadletter)

    assert metric(worker, "interest_events_consumed_total", type="search") == sum(
        1 for e in events if e["type"] == "search"
    )
    assert metric(worker, "interest_recommendations_published_total") == len(recs)
    assert metric(worker, "interest_state_writes_total") == len(sink.on(settings.topics.state))
    assert metric(worker, "interest_events_applied_total") == len(events)
    assert metric(worker, "interest_texts_encoded_total") > 0
    assert metric(worker, "interest_users_held") == len(expected)
    assert metric(worker, "interest_catalog_items") == len(catalog)


def test_bad_records_are_dead_lettered_with_reasons(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    catalog, events = log_data
    settings = _settings().replace(limits={"max_text_chars": 50})
    sink = MemorySink()
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    good = events[:30]
    bad = [
        (b"u1", b"{not json", "not_json"),
        (b"u2", b"[1, 2]", "not_object"),
        (
            b"u3",
            orjson.dumps({"ts": 1.0, "type": "view", "item_id": "m1"}),
            "missing_field:user_id",
        ),
        (
            b"u4",
            orjson.dumps({"user_id": "u4", "ts": 1.0, "type": "teleport"}),
            "unknown_event_type",
        ),
        (
            b"u5",
            orjson.dumps({"user_id": "u5", "ts": 1.0, "type": "search", "text": "x" * 51}),
            "text_too_long",
        ),
        (b"u6", orjson.dumps({"user_id": "u6", "ts": "yesterday", "type": "view"}), "bad_type:ts"),
        (
            b"u7",
            orjson.dumps({"user_id": "u7", "ts": 5.0, "type": "click", "item_id": "no-such"}),
            "unknown_item",
        ),
        (b"u8", None, "null_value"),
    ]
    records = feed.events(good)
    bad_records = [feed.record(key.decode(), value) for key, value, _ in bad]
    mixed = records[:10] + bad_records[:4] + records[10:] + bad_records[4:]
    plan = worker.handle(mixed, sink)

    letters = sink.on(settings.topics.deadletter)
    reasons = Counter(dict(r.headers)["reason"].decode() for r in letters)
    assert reasons == Counter(reason for _, _, reason in bad)
    for letter in letters:
        headers = dict(letter.headers)
        original = next(r for r in bad_records if r.key == letter.key)
        assert letter.value == original.value  # original bytes, untouched
        assert headers["source_topic"].decode() == settings.topics.events
        assert int(headers["source_partition"]) == original.partition
        assert int(headers["source_offset"]) == original.offset
        assert headers["worker_id"] == b"test-worker"
        assert headers["detail"]
    for _, _, reason in bad:
        assert metric(worker, "interest_events_deadlettered_total", reason=reason) == 1
    assert metric(worker, "interest_events_consumed_total", type="invalid") == 7
    # the good events went through all the same
    assert {r.key.decode() for r in plan.recommendations} == {e["user_id"] for e in good}
    assert plan.offsets[(settings.topics.events, bad_records[-1].partition)] >= (
        bad_records[-1].offset + 1
    )


def test_replay_after_a_crash_applies_nothing_twice(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    """Published but not committed: the next owner restores state and skips by offset."""
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink()
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    records = feed.events(events)
    half = len(records) // 2
    first = make_worker(settings, catalog)
    first.handle(records[:half], sink)
    # ... crash here: the offsets of that batch were never committed.

    second = make_worker(settings, catalog, sink)
    restored = second.restore_partitions(range(PARTITIONS))
    assert restored == len({r.key for r in records[:half]})
    replayed = second.handle(records, sink)  # from the last committed offset: the start
    assert replayed.duplicates == half
    for user, counts in counts_by_user(events).items():
        assert second.engine.describe_user(user)["events_by_type"] == dict(counts)
    assert metric(second, "interest_events_duplicate_total") == half
    assert metric(second, "interest_users_restored_total") == restored
    # a restored user's versions keep counting up
    recs = [parse_recommendation(r.value) for r in sink.on(settings.topics.recommendations)]
    per_user: dict[str, list[int]] = {}
    for rec in recs:
        per_user.setdefault(rec.user_id, []).append(rec.version)
    assert all(v == sorted(set(v)) for v in per_user.values())


def test_delete_user_publishes_tombstones_and_forgets(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink()
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    worker.handle(feed.events(events[:40]), sink)
    victim = events[0]["user_id"]
    delete = {"event_id": "del-1", "user_id": victim, "ts": 2e9, "type": "delete_user"}
    plan = worker.handle(feed.events([delete]), sink)
    assert [(r.key.decode(), r.value) for r in plan.states] == [(victim, None)]
    assert [(r.key.decode(), r.value) for r in plan.recommendations] == [(victim, None)]
    assert sink.latest(settings.topics.state)[victim] is None
    assert worker.engine.describe_user(victim) is None
    assert metric(worker, "interest_tombstones_published_total") == 2


def test_catalog_deletion_never_recommended_again(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink()
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    plan = worker.handle(feed.events(events[:60]), sink)
    shown = Counter(
        item.item_id for r in plan.recommendations for item in parse_recommendation(r.value).items
    )
    gone = shown.most_common(1)[0][0]
    tombstone = InputRecord(settings.topics.catalog, 0, 10_000, gone.encode(), None)
    worker.apply_catalog_records([tombstone])
    assert not worker.engine.has_item(gone)
    later = worker.handle(feed.events(events[60:]), sink)
    assert later.recommendations
    for record in later.recommendations:
        assert gone not in {i.item_id for i in parse_recommendation(record.value).items}
    assert metric(worker, "interest_catalog_records_total", outcome="delete") == 1
    assert metric(worker, "interest_catalog_items") == len(catalog) - 1


def test_evicted_users_are_reloaded_from_state(log_data: tuple[list[dict], list[dict]]) -> None:
    catalog, events = log_data
    settings = _settings().replace(state={"user_ttl_s": 60.0})
    sink = MemorySink()
    worker = make_worker(settings, catalog, sink)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    split = len(events) * 2 // 3
    worker.handle(feed.events(events[:split]), sink)
    held = worker.engine.users_held
    evicted = worker.evict_idle(now=4e9)  # far in the future: everyone is idle
    assert len(evicted) == held and worker.engine.users_held == 0
    assert metric(worker, "interest_users_evicted_total") == held
    worker.handle(feed.events(events[split:]), sink)
    comeback = {e["user_id"] for e in events[split:]}
    assert metric(worker, "interest_users_restored_total") == len(
        comeback & {e["user_id"] for e in events[:split]}
    )
    for user in comeback:
        assert worker.engine.describe_user(user)["events_by_type"] == dict(
            counts_by_user(events)[user]
        )


def test_users_beyond_max_users_are_evicted_and_reloaded(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    catalog, events = log_data
    settings = _settings().replace(state={"max_users": 5})
    sink = MemorySink()
    worker = make_worker(settings, catalog, sink)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    split = len(events) * 2 // 3
    worker.handle(feed.events(events[:split]), sink)
    held = worker.engine.users_held
    assert held > 5
    evicted = worker.evict_idle()  # nobody is idle yet: only the cap applies
    assert len(evicted) == held - 5 and worker.engine.users_held == 5
    assert metric(worker, "interest_users_evicted_total") == held - 5
    worker.handle(feed.events(events[split:]), sink)
    for user in {e["user_id"] for e in events[split:]}:
        assert worker.engine.describe_user(user)["events_by_type"] == dict(
            counts_by_user(events)[user]
        )


def test_released_partitions_leave_memory(log_data: tuple[list[dict], list[dict]]) -> None:
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink()
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    records = feed.events(events)
    worker.handle(records, sink)
    in_zero = {r.key.decode() for r in records if r.partition == 0}
    assert worker.residency.release([0]) == len(in_zero)
    assert worker.engine.users_held == len({r.key for r in records}) - len(in_zero)
    assert all(worker.engine.describe_user(u) is None for u in in_zero)


def test_a_record_bigger_than_the_producer_accepts_is_dead_lettered_truncated(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    # The record: a 2,000,000-character chat. The sink refuses records over
    # 1 MiB as kafka-python's producer does by default.
    catalog, events = log_data
    settings = _settings()
    sink = MemorySink(max_record_bytes=1_048_576)
    worker = make_worker(settings, catalog)
    feed = RecordFeed(settings.topics.events, PARTITIONS)
    huge = orjson.dumps({"user_id": "u1", "ts": 1.0, "type": "chat", "text": "x" * 2_000_000})
    good = feed.events(events[:20])
    plan = worker.handle([*good[:10], feed.record("u1", huge), *good[10:]], sink)

    (letter,) = sink.on(settings.topics.deadletter)
    headers = dict(letter.headers)
    assert headers["reason"] == b"record_too_large"
    assert headers["truncated"] == b"1"
    assert int(headers["original_size"]) == len(huge)
    assert headers["original_sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert letter.value is not None and huge.startswith(letter.value)
    assert record_bytes(letter) <= settings.limits.max_publish_bytes
    assert metric(worker, "interest_events_deadlettered_total", reason="record_too_large") == 1
    assert metric(worker, "interest_records_trimmed_total", kind="deadletter") == 1
    assert metric(worker, "interest_poison_records_total", reason="record_too_large") == 0
    assert {r.key.decode() for r in plan.recommendations} == {e["user_id"] for e in events[:20]}


def test_a_worker_restarted_in_a_crash_loop_says_so_until_it_commits(
    log_data: tuple[list[dict], list[dict]],
) -> None:
    catalog, _ = log_data
    worker = make_worker(_settings(), catalog)
    note = "crash loop: 3 exits in 6 s, last at offset interest.events[0]@7 (E: x)"
    worker.restarted(3, note)
    assert f"crash_loop: {note}" in worker.not_ready_reasons()
    assert metric(worker, "interest_worker_restarts_total") == 3
    report = worker.crash_report(RuntimeError("boom"))
    assert report["error"] == "RuntimeError: boom" and report["offsets"] == {}


def test_a_failure_writing_the_item_signals_fails_the_batch(
    log_data: tuple[list[dict], list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's item signals are written while the batch is processed (once its events
    are applied, before its users are ranked). An error there fails the batch, as an
    error of its plan always did (the worker restarts and reads it again from its
    commits), instead of sending the batch through the engine again one event at a time,
    with its signals lost and its offsets committed."""
    import consumers.knowledge_follower as knowledge_follower

    catalog, events = log_data
    settings = _settings()
    worker = make_worker(settings, catalog)
    records = RecordFeed(settings.topics.events, PARTITIONS).events(events[:200])
    write = knowledge_follower.signal_records
    calls: list[int] = []

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise RuntimeError("the signals writer broke")

    monkeypatch.setattr(knowledge_follower, "signal_records", broken)
    with pytest.raises(RuntimeError, match="the signals writer broke"):
        worker.process_records(records[:100])
    assert calls == [1]  # once, for the whole batch
    monkeypatch.setattr(knowledge_follower, "signal_records", write)
    plan = worker.process_records(records[100:])
    assert plan.signals and not plan.dead_letters
