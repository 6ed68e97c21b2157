"""The item-keyed stage on a real broker.

* The aggregation (``interest aggregate``, a real process) is SIGKILLed mid-replay of an
  item-signals log that also holds a re-processed stretch (duplicates), restarted, and
  the item knowledge it publishes ends exactly equal to a single-process fold of the
  same log.
* A worker that starts later rebuilds the fleet's knowledge from ``interest.items`` and
  the fusion weights from ``interest.models``, and is not ready before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from consumers.barrier import is_barrier
from consumers.cli import load_settings
from consumers.fleet import settings_env
from consumers.item_aggregator import fold_for
from consumers.knowledge_follower import signal_records
from consumers.state_store import item_partition, partition_for_key
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.engine import FEATURES, INITIAL_FUSION, Engine
from interest_core.item_knowledge import ItemRecord, parse_item_knowledge
from interest_core.item_signals import (
    FUSION_KEY,
    FusionFeedback,
    ItemSignal,
    derive_signals,
    encode_bundle,
    encode_fusion_record,
    encode_item_record,
    group_by_item,
)
from interest_core.params import parse_params
from interest_core.settings import Settings
from interest_core.shared_fusion import FUSION_PARAM, SharedFusion
from producers.broker import free_port
from producers.topics import create_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 1500
PARTITIONS = 4


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    chosen = kafka_settings.replace(
        encoder={"backend": "hashing"},
        items={"flush_interval_ms": 100, "max_neighbours": 8},
    )
    create_topics(chosen)
    return chosen


def _signal_log(partitions: int) -> tuple[list[tuple[bytes, bytes]], list]:  # type: ignore[type-arg]
    """(key, value) records as workers publish them to a signals topic of ``partitions``
    partitions, and the signals in log order: a third of the events as this version's
    workers write them, the others as the two previous versions' (rolling upgrades).

    Users' events live in PARTITIONS events partitions; a stretch of one partition is
    published twice (a worker re-processed it after a crash)."""
    import random

    rng = random.Random(5)
    history: dict[int, list[str]] = {}
    offsets = [0] * PARTITIONS
    per_event = []
    for n in range(EVENTS):
        user = rng.randrange(80)
        partition = user % PARTITIONS
        item = f"m{min(int(rng.paretovariate(1.1)), 60)}"
        recent = list(dict.fromkeys(reversed(history.get(user, []))))[:5]
        signals = derive_signals(
            item,
            recent,
            weight=rng.choice([1.0, 1.5, 4.0]),
            ts=1_700_000_000.0 + 30 * n,
            partition=partition,
            offset=offsets[partition],
            decay=0.85,
        )
        lesson = FusionFeedback(
            partition, offsets[partition], 0.0, tuple(rng.uniform(-1, 1) for _ in FEATURES)
        )
        offsets[partition] += 1
        history.setdefault(user, []).append(item)
        per_event.append((signals, lesson))
    records: list[tuple[bytes, bytes]] = []
    for n, (signals, lesson) in enumerate(per_event + per_event[400:520]):  # re-processed
        if n % 3 == 1:  # this version's workers: bundles in columns by signals partition
            # (the event's own signal stands for its partners'), with the lesson
            records += signal_records([signals[0]], [lesson], {}, partitions=partitions)
            continue
        if n % 3 == 2:  # round 8's workers: bundles of per-item entries (format 2)
            groups = group_by_item(signals)
            by_partition: dict[int, list[tuple[str, list[ItemSignal]]]] = {}
            for item_id, group in groups.items():
                by_partition.setdefault(item_partition(item_id, partitions), []).append(
                    (item_id, group)
                )
            for entries in by_partition.values():
                records.append((entries[0][0].encode(), encode_bundle(entries)))
            records.append((FUSION_KEY.encode(), encode_fusion_record([lesson])))
            continue
        for signal_ in signals:  # older workers: one record per item (format 1)
            records.append(
                (signal_.item_id.encode(), encode_item_record(signal_.item_id, [signal_]))
            )
        records.append((FUSION_KEY.encode(), encode_fusion_record([lesson])))
    return records, per_event


def _publish(settings: Settings, records: list[tuple[bytes, bytes]], *, chunks: int = 1) -> None:
    """Publish ``records``; in ``chunks`` flushed pieces 0.1 s apart (a stream still being
    written while the aggregator folds it, whatever the machine's speed)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    size = max(1, -(-len(records) // chunks))
    try:
        for start in range(0, len(records), size):
            for key, value in records[start : start + size]:
                producer.send(settings.topics.item_signals, key=key, value=value)
            producer.flush()
            if start + size < len(records):
                time.sleep(0.1)
    finally:
        producer.close()


def _latest(settings: Settings, topic: str) -> dict[bytes, bytes | None]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        latest: dict[bytes, bytes | None] = {}
        quiet = 0
        while quiet < 3:
            polled = consumer.poll(timeout_ms=300)
            quiet = 0 if polled else quiet + 1
            for records in polled.values():
                for record in records:
                    if record.key is not None and not is_barrier(record.key):
                        latest[bytes(record.key)] = record.value
        return latest
    finally:
        consumer.close()


def _committed(settings: Settings) -> int:
    """Signals records the aggregation group has committed, over all partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.items.group_id,
        enable_auto_commit=False,
    )
    try:
        topic = settings.topics.item_signals
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.committed(tp) or 0 for tp in tps)
    finally:
        consumer.close()


def _aggregator(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings, load_settings(None, {}))}
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "aggregate", "--metrics-port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def _expected(settings: Settings, per_event) -> tuple[dict[str, ItemRecord], SharedFusion]:  # type: ignore[no-untyped-def]
    fold = fold_for(settings)
    fusion = SharedFusion(
        FEATURES, learning_rate=settings.recommend.fusion_learning_rate, initial=INITIAL_FUSION
    )
    for signals, lesson in per_event:
        fold.apply_all(signals)
        fusion.apply(lesson)
    return fold.items, fusion


def test_killed_aggregator_ends_with_the_single_process_knowledge(
    settings: Settings, tmp_path: Path
) -> None:
    records, per_event = _signal_log(settings.topics.item_signals_partitions)
    expected, fusion = _expected(settings, per_event)
    writer: threading.Thread | None = None
    # Small fetches: the aggregator reads the log in many steps, so it can be caught
    # in the middle of it.
    settings = settings.replace(consumer={"max_partition_fetch_bytes": 2048})
    half = len(records) // 2
    _publish(settings, records[:half])
    log = tmp_path / "aggregate.log"
    first = _aggregator(settings, log)
    try:
        deadline = time.monotonic() + 60
        while not _latest(settings, settings.topics.items):  # it is folding and publishing
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the aggregator published nothing"
            time.sleep(0.1)
        # The rest, then all of it again (workers re-processing after crashes), written
        # while the aggregator folds: it is killed in the middle of the stream.
        # Written in 40 pieces 0.1 s apart, so the kill lands while the writer is still
        # writing: whatever the aggregator's speed, part of the log is not yet committed.
        writer = threading.Thread(
            target=_publish, args=(settings, records[half:] + records), kwargs={"chunks": 40}
        )
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive(), "the writer finished before the kill"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        committed_at_kill = _committed(settings)
    finally:
        if first.poll() is None:
            first.kill()
    if writer is not None:
        writer.join(60)
    second = _aggregator(settings, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            latest = _latest(settings, settings.topics.items)
            got = {}
            for key, value in latest.items():
                assert value is not None
                parsed = parse_item_knowledge(key, value)
                assert isinstance(parsed, ItemRecord), parsed
                got[parsed.item_id] = parsed
            if got.keys() == expected.keys() and all(
                got[i].watermarks == expected[i].watermarks for i in expected
            ):
                break
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (
                f"{len(got)}/{len(expected)} items caught up; {log.read_text()[-2000:]}"
            )
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while _committed(settings) < half + len(records[half:]) + len(records):
            assert time.monotonic() < deadline, "the restarted aggregator did not commit it all"
            time.sleep(0.3)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    # It was killed mid-replay: after committing part of the signals log, not all of it.
    written = half + len(records[half:]) + len(records)
    assert 0 < committed_at_kill < written, (committed_at_kill, written)
    for item_id, want in expected.items():
        have = got[item_id]
        assert have.count == want.count, item_id
        assert have.neighbours == pytest.approx(want.neighbours), item_id
        assert len(have.neighbours) <= 2 * settings.items.max_neighbours
        assert have.trending.value == pytest.approx(want.trending.value), item_id
        assert have.popularity.value == pytest.approx(want.popularity.value), item_id
    # The fusion weights: every lesson once, whatever was replayed.
    models = _latest(settings, settings.topics.models)
    param = parse_params(models[FUSION_PARAM.encode()], key=FUSION_PARAM)
    assert not isinstance(param, Exception) and hasattr(param, "values")
    assert param.meta["updates"] == EVENTS  # type: ignore[union-attr]
    assert list(param.values) == pytest.approx(list(fusion.fusion.weights))  # type: ignore[union-attr]
    # The signals of one item all went to one aggregator partition (keyed by item).
    assert partition_for_key(FUSION_KEY.encode(), settings.topics.item_signals_partitions) >= 0


def test_a_new_worker_catches_up_on_the_fleets_knowledge_before_it_is_ready(
    settings: Settings, tmp_path: Path
) -> None:
    records, per_event = _signal_log(settings.topics.item_signals_partitions)
    expected, fusion = _expected(settings, per_event)
    _publish(settings, records)
    aggregator = _aggregator(settings, tmp_path / "aggregate.log")
    try:
        deadline = time.monotonic() + 90
        while len(_latest(settings, settings.topics.items)) < len(expected):
            assert aggregator.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.3)
        time.sleep(1.0)  # the last flush (its records are read past a barrier anyway)
    finally:
        aggregator.send_signal(signal.SIGTERM)
        aggregator.wait(20)
    # A catalog so the worker can lay the knowledge on rows.
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for n in range(61):
        producer.send(
            settings.topics.catalog,
            key=f"m{n}".encode(),
            value=f'{{"item_id": "m{n}", "title": "film {n}"}}'.encode(),
        )
    producer.flush()
    producer.close()
    engine = Engine(HashingEncoder(dim=32), settings, emit_item_signals=True)
    worker = Worker(settings, engine=engine, registry=CollectorRegistry(), worker_id="late")
    assert "item knowledge loading" in worker.not_ready_reasons()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.wait_ready(60), worker.not_ready_reasons()
        view = engine.item_view
        assert set(view.records) == set(expected)
        for item_id, want in expected.items():
            row = engine.catalog.row_of[item_id]
            assert engine.knowledge.cooccurrence.counts[row] == want.count
            pairs = engine.knowledge.cooccurrence.pairs(row)
            assert {engine.catalog.item_ids[r]: c for r, c in pairs.items()} == pytest.approx(
                want.neighbours
            )
        assert engine.fusion.weights.tolist() == pytest.approx(fusion.fusion.weights.tolist())
        value = worker.metrics.registry.get_sample_value
        assert value("interest_param_version", {"name": FUSION_PARAM}) >= 1
        assert value("interest_item_records_total", {"outcome": "applied"}) >= len(expected)
    finally:
        stop.set()
        thread.join(30)
