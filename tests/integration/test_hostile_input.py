"""Hostile input: a running worker takes 10,000 malformed, oversized, wrongly typed,
unicode-garbage, null-laden and wrong-topic records interleaved with valid events.

It must not crash; every hostile record lands on the dead-letter topic with a
machine-readable reason (the original bytes and key kept); the valid events between
them are applied exactly once. The first tests check the generator itself, without a
broker: every record it makes really is hostile.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from consumers.bounded import record_bytes
from interest_core.records import Rejected, parse_event
from interest_core.settings import Settings
from producers.kafka_client import make_admin
from producers.synthetic import generate_dataset
from producers.topics import create_topics
from tests.hostile import (
    KAFKA_KINDS,
    KINDS,
    hostile_records,
    interleave,
    kafka_layer_records,
    odd_headers,
)
from tests.integration.survival import (
    committed_everything,
    expected_counts,
    publish_catalog,
    publish_raw,
    read_topic,
    state_counts,
    wait_until,
    worker_thread,
)

#: ``missing_field:user_id``, ``not_json``, ``unknown_item``...: lower-case words.
REASON = re.compile(r"^[a-z_]+(:[a-z_]+)?$")
HOSTILE = 10_000


def _parser_reason(value: bytes, settings: Settings) -> str | None:
    parsed = parse_event(
        value,
        fallback_id="t/0/0",
        max_text_chars=settings.limits.max_text_chars,
        max_record_bytes=settings.limits.max_record_bytes,
    )
    return parsed.reason if isinstance(parsed, Rejected) else None


def test_every_kind_is_made_and_the_parser_rejects_each_record() -> None:
    settings = Settings()
    records = hostile_records(3000, seed=7, user_ids=["u1", "u2"], item_ids=["i1"])
    assert {r.kind for r in records} == set(KINDS)
    for record in records:
        if record.kind == "null_value":
            assert record.value is None
        elif record.kind == "unknown_item":  # well-formed: only the catalog can tell
            assert record.value is not None
            assert _parser_reason(record.value, settings) is None
        else:
            assert record.value is not None
            reason = _parser_reason(record.value, settings)
            assert reason is not None, (record.kind, record.value[:200])
            assert REASON.match(reason), reason


@hsettings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_hostile_records_are_hostile_for_any_seed(seed: int) -> None:
    settings = Settings()
    for record in hostile_records(60, seed=seed, user_ids=["u1"], item_ids=["i1"]):
        if record.parser_rejects:
            assert record.value is not None
            assert _parser_reason(record.value, settings) is not None, record


def test_interleave_keeps_both_orders() -> None:
    valid = [f"v{i}" for i in range(50)]
    hostile = [f"h{i}" for i in range(30)]
    mixed = interleave(valid, hostile, seed=3)
    assert [x for x in mixed if x.startswith("v")] == valid
    assert [x for x in mixed if x.startswith("h")] == hostile


@pytest.mark.integration
def test_a_running_worker_dead_letters_every_hostile_record_and_applies_the_rest(
    kafka_settings: Settings,
) -> None:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    data = generate_dataset(users=40, items=120, events=1500, seed=11)
    create_topics(settings)
    publish_catalog(settings, data.catalog)
    user_ids = sorted({str(e["user_id"]) for e in data.events})
    item_ids = [str(item["item_id"]) for item in data.catalog]
    hostile = hostile_records(
        HOSTILE,
        seed=5,
        user_ids=user_ids,
        item_ids=item_ids,
        max_record_bytes=settings.limits.max_record_bytes,
        max_text_chars=settings.limits.max_text_chars,
    )
    valid = [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in data.events]
    mixed = interleave(valid, [(r.key, r.value) for r in hostile], seed=5)

    with worker_thread(settings) as running:
        publish_raw(settings, settings.topics.events, mixed)
        wait_until(
            lambda: committed_everything(settings) or not running.alive,
            120.0,
            "the worker committed every record",
        )
        assert running.alive, f"the worker died: {running.error!r}"
        assert running.error is None
        registry = running.worker.metrics.registry

    # Every hostile record, and nothing else, is on the dead-letter topic with its
    # original key and bytes and the reason the contract's parser (or the worker, for a
    # null value, or the engine, for an unknown item) gives.
    dead = read_topic(settings, settings.topics.deadletter)
    got: Counter[tuple[bytes | None, bytes | None, str]] = Counter()
    for record in dead:
        headers = dict(record.headers)
        reason = headers["reason"].decode()
        assert REASON.match(reason), reason
        assert headers["source_topic"].decode() == settings.topics.events
        got[(record.key, record.value, reason)] += 1
    wanted: Counter[tuple[bytes | None, bytes | None, str]] = Counter()
    kind_of: dict[tuple[bytes | None, bytes | None, str], str] = {}
    for record in hostile:
        if record.kind == "null_value":
            reason = "null_value"
        elif record.kind == "unknown_item":
            reason = "unknown_item"
        else:
            assert record.value is not None
            reason = _parser_reason(record.value, settings) or "accepted?!"
        wanted[(record.key, record.value, reason)] += 1
        kind_of[(record.key, record.value, reason)] = record.kind
    missing = Counter(kind_of[k] for k in (wanted - got).elements())
    extra = [(k, v[:80] if v else v, r) for k, v, r in (got - wanted).elements()]
    assert not missing and not extra, f"not dead-lettered: {missing}; unexpected: {extra[:10]}"
    assert len(dead) == len(hostile)

    # The metrics agree: one dead-letter count per hostile record.
    counted = sum(
        sample.value
        for family in text_string_to_metric_families(
            running.worker.metrics.exposition()[0].decode()
        )
        for sample in family.samples
        if sample.name == "interest_events_deadlettered_total"
    )
    assert counted == len(hostile)
    assert _poison(registry) == 0

    # The valid events in between were applied exactly once each, user by user.
    counts, deleted = state_counts(settings)
    assert not deleted
    assert counts == expected_counts(data.events)
    published = {r.key.decode() for r in read_topic(settings, settings.topics.recommendations)}
    assert published == set(user_ids)


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _original(record: Any) -> tuple[str | None, str | None, str]:
    """(SHA-256 of the original key, of the original value, reason) of a dead letter,
    through the truncation headers when it was cut."""
    headers = dict(record.headers)
    key_sha = headers.get("original_key_sha256")
    value_sha = headers.get("original_sha256")
    return (
        key_sha.decode() if key_sha else _sha(record.key),
        value_sha.decode() if value_sha else _sha(record.value),
        headers["reason"].decode(),
    )


def _poison(registry: Any) -> float:
    """Records counted in ``interest_poison_records_total``, every reason."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "interest_poison_records_total"
    )


def _lag(worker_metrics: bytes) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(worker_metrics.decode())
        for sample in family.samples
        if sample.name == "interest_consumer_lag_records"
    )


@pytest.mark.integration
def test_kafka_layer_hostile_records_never_stop_a_partition(kafka_settings: Settings) -> None:
    """Values over the producer's limit (the events topic's own limit raised to 8 MiB),
    100 KB and 1.5 MB keys, null keys, binary and duplicate headers, other topics'
    schemas, absurd numbers, deep objects and a run of 1,500 bad records with no good
    one between, in plain, gzip, lz4, zstd and snappy batches: each is dead-lettered (cut to fit
    when too big) with its reason, the valid events between them are applied exactly
    once, and the consumer lag returns to 0."""
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    topics = settings.topics
    admin = make_admin(settings)
    try:
        admin.create_topics(
            [
                NewTopic(
                    topics.events,
                    topics.events_partitions,
                    topics.replication_factor,
                    topic_configs={"max.message.bytes": str(8 * 1024 * 1024)},
                )
            ]
        )
    finally:
        admin.close()
    create_topics(settings)
    data = generate_dataset(users=30, items=100, events=900, seed=12)
    publish_catalog(settings, data.catalog)
    user_ids = sorted({str(e["user_id"]) for e in data.events})
    item_ids = [str(item["item_id"]) for item in data.catalog]
    limits = settings.limits
    kafka_kinds = kafka_layer_records(
        3,
        seed=21,
        user_ids=user_ids,
        item_ids=item_ids,
        max_record_bytes=limits.max_record_bytes,
        max_text_chars=limits.max_text_chars,
    )
    assert {r.kind for r in kafka_kinds} == set(KAFKA_KINDS)
    run_key = user_ids[0].encode()
    bad_run = [
        (run_key, r.value, ())
        for r in hostile_records(
            1500,
            seed=22,
            user_ids=user_ids,
            item_ids=item_ids,
            max_record_bytes=limits.max_record_bytes,
            max_text_chars=limits.max_text_chars,
        )
    ]
    rng = random.Random(23)
    valid = [
        (str(e["user_id"]).encode(), orjson.dumps(e), odd_headers(rng) if i % 5 == 0 else ())
        for i, e in enumerate(data.events)
    ]
    mixed = interleave(valid, [(r.key, r.value, r.headers) for r in kafka_kinds], seed=24)
    codecs = [None, "gzip", "lz4", "zstd", "snappy"]
    part = len(mixed) // len(codecs)
    phases = [mixed[part * i : part * (i + 1)] for i in range(len(codecs) - 1)]
    phases.append(mixed[part * (len(codecs) - 1) :])
    phases[0] += bad_run

    with worker_thread(settings) as running:
        for records, codec in zip(phases, codecs, strict=True):
            publish_raw(settings, topics.events, records, compression_type=codec)
        wait_until(
            lambda: committed_everything(settings) or not running.alive,
            180.0,
            "the worker committed every record",
        )
        assert running.alive, f"the worker died: {running.error!r}"
        assert running.error is None
        wait_until(
            lambda: _lag(running.worker.metrics.exposition()[0]) == 0,
            60.0,
            "the consumer lag returned to 0",
        )
        registry = running.worker.metrics.registry

    # Every hostile record, and nothing else, is dead-lettered with its reason; the ones
    # too big to publish whole are cut and name the original's size and SHA-256.
    hostile = [(r.key, r.value) for r in kafka_kinds] + [(k, v) for k, v, _ in bad_run]
    wanted: Counter[tuple[str | None, str | None, str]] = Counter()
    for key, value in hostile:
        if value is None:
            reason = "null_value"
        else:
            reason = _parser_reason(value, settings) or "unknown_item"
        wanted[(_sha(key), _sha(value), reason)] += 1
    dead = read_topic(settings, topics.deadletter)
    got = Counter(_original(record) for record in dead)
    assert got == wanted, (
        f"missing {sum((wanted - got).values())}, unexpected {sum((got - wanted).values())}"
    )
    for record in dead:
        assert record_bytes(record) <= limits.max_publish_bytes
    truncated = [r for r in dead if dict(r.headers).get("truncated") == b"1"]
    # over_request_size and giant_key_and_value: 3 of each
    assert len(truncated) == 6
    assert registry.get_sample_value(
        "interest_records_trimmed_total", {"kind": "deadletter"}
    ) == len(truncated)
    assert _poison(registry) == 0  # nothing had to be skipped

    # The valid events, headers or not, compressed or not, were applied exactly once.
    counts, deleted = state_counts(settings)
    assert not deleted
    assert counts == expected_counts(data.events)
    published = {r.key.decode() for r in read_topic(settings, topics.recommendations)}
    assert published == set(user_ids)
