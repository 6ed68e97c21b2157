"""The item aggregation's broker-free step: signals records in, item records out, bad
records refused and counted, deletions published as tombstones, fusion weights as a
versioned parameter."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from consumers.batching import InputRecord
from consumers.item_aggregator import ItemAggregator
from consumers.state_store import item_partition
from interest_core.item_knowledge import ItemRecord, parse_item_knowledge
from interest_core.item_signals import (
    FUSION_KEY,
    FusionFeedback,
    SignalRecord,
    derive_signals,
    encode_fusion_record,
    encode_item_record,
    event_signal,
    expand_signals,
    group_by_item,
    parse_signal_records,
)
from interest_core.params import ParamRecord, parse_params
from interest_core.settings import Settings

FEATURES = ("a", "b", "c")
TOPIC = "interest.item-signals"


def _aggregator(partitions: int = 1) -> ItemAggregator:
    """An aggregator of a signals topic of ``partitions`` partitions (one: every item is
    read where these tests put it)."""
    return ItemAggregator(
        Settings().replace(topics={"item_signals_partitions": partitions}),
        registry=CollectorRegistry(),
        features=FEATURES,
        initial_fusion=(1.0, 1.0, 1.0),
    )


def _records(events: list[tuple[str, list[str], int]]) -> list[InputRecord]:
    """One signals record per item per event (item, history, source offset)."""
    out: list[InputRecord] = []
    for item, history, offset in events:
        signals = derive_signals(
            item,
            history,
            weight=1.0,
            ts=100.0 + offset,
            partition=0,
            offset=offset,
            ingested_at=5.0,
        )
        for item_id, group in group_by_item(signals).items():
            out.append(
                InputRecord(
                    TOPIC, 0, len(out), item_id.encode(), encode_item_record(item_id, group)
                )
            )
    return out


def _published(out) -> dict[str, ItemRecord | None]:  # type: ignore[no-untyped-def]
    items: dict[str, ItemRecord | None] = {}
    for record in out:
        if record.topic != Settings().topics.items:
            continue
        key = record.key.decode()
        if record.value is None:
            items[key] = None
            continue
        parsed = parse_item_knowledge(record.key, record.value)
        assert isinstance(parsed, ItemRecord)
        items[key] = parsed
    return items


def test_signals_fold_into_published_items_and_bad_records_are_counted() -> None:
    aggregator = _aggregator()
    records = _records([("m1", [], 0), ("m2", ["m1"], 1), ("m3", ["m2", "m1"], 2)])
    bad = [
        InputRecord(TOPIC, 1, 0, b"m9", b"not json"),
        InputRecord(TOPIC, 1, 1, None, b"{}"),
        InputRecord(
            TOPIC, 1, 2, b"m9", orjson.dumps({"format": 1, "item_id": "m8", "signals": []})
        ),
    ]
    assert aggregator.apply_records(records + bad) == 6
    out, ingested = aggregator.flush_plan(now=10.0)
    items = _published(out)
    assert sorted(items) == ["m1", "m2", "m3"]
    m1 = items["m1"]
    assert m1 is not None and m1.count == 1.0 and m1.neighbours == {"m2": 1.0, "m3": 1.0}
    assert m1.version == 1 and m1.watermarks == {0: 2}
    assert ingested == [5.0, 5.0, 5.0]
    # Offsets to commit: past every record read, refused ones included.
    assert aggregator.offsets == {(TOPIC, 0): len(records), (TOPIC, 1): 3}
    value = aggregator.metrics.registry.get_sample_value
    assert value("interest_item_signal_records_rejected_total", {"reason": "not_json"}) == 1
    assert value("interest_item_signal_records_rejected_total", {"reason": "missing_key"}) == 1
    assert value("interest_item_signal_records_rejected_total", {"reason": "key_mismatch"}) == 1
    assert value("interest_item_signals_total", {"outcome": "applied"}) == 6
    # Replaying the same records changes nothing and publishes nothing.
    assert aggregator.apply_records(records) == 0
    assert aggregator.flush_plan()[0] == []


def test_catalog_deletion_publishes_a_tombstone_and_cleans_neighbour_lists() -> None:
    aggregator = _aggregator()
    aggregator.apply_records(_records([("m1", [], 0), ("m2", ["m1"], 1)]))
    aggregator.flush_plan()
    aggregator.apply_catalog_records([InputRecord("interest.catalog", 0, 0, b"m1", None)])
    items = _published(aggregator.flush_plan()[0])
    assert items["m1"] is None
    m2 = items["m2"]
    assert m2 is not None and m2.neighbours == {} and m2.version == 2


def test_fusion_feedback_is_learned_once_and_published_as_a_parameter() -> None:
    aggregator = _aggregator()
    lesson = [FusionFeedback(0, 7, 1.0, (0.5, -0.25, -0.25))]
    record = InputRecord(TOPIC, 2, 0, FUSION_KEY.encode(), encode_fusion_record(lesson))
    aggregator.apply_records([record, record])
    out, _ = aggregator.flush_plan(now=3.0)
    (param,) = [r for r in out if r.topic == Settings().topics.models]
    parsed = parse_params(param.value, key=param.key.decode())  # type: ignore[arg-type,union-attr]
    assert isinstance(parsed, ParamRecord)
    assert parsed.version == 1 and parsed.meta["updates"] == 1
    assert parsed.values[0] > parsed.values[1]
    assert aggregator.flush_plan()[0] == []  # unchanged: nothing new to publish


def test_worker_bundles_hold_one_partition_each_stay_small_and_fold_the_same() -> None:
    """A batch's signals go out as bundles: each holds only items of the partition its key
    goes to, stays near the size bound (a hot item is split over bundles), and folding
    them where they land gives what folding the signals directly gives."""
    from consumers.knowledge_follower import signal_records

    partitions, max_bytes = 8, 4096
    # The engine's outbox keeps one own-item signal per event; its partners' are written
    # by signal_records.
    signals = [
        event_signal(
            "hot" if offset % 3 else f"m{offset % 11}",
            [f"m{(offset + k) % 23}" for k in range(offset % 6)],
            weight=1.0,
            ts=float(offset),
            partition=1,
            offset=offset,
        )
        for offset in range(300)
    ]
    lessons = [FusionFeedback(1, o, 0.0, (0.1, 0.0, -0.1)) for o in range(200)]
    records = signal_records(
        signals, lessons, {(1, 5): 42.0}, partitions=partitions, max_bytes=max_bytes
    )
    fusion = [(k, v) for k, v in records if k == FUSION_KEY.encode()]
    bundles = [(k, v) for k, v in records if k != FUSION_KEY.encode()]
    assert len(fusion) == 2  # 200 lessons, 128 per record
    assert 8 < len(bundles) < 40  # some 33 items in 8 partitions, not one record each
    read: list[InputRecord] = []
    hot_bundles = 0
    for key, value in bundles:
        partition = item_partition(key.decode(), partitions)
        held = [p for p in parse_signal_records(key, value) if isinstance(p, SignalRecord)]
        items = [p.item_id for p in held]  # the items whose signals the bundle holds
        assert key.decode() in items
        assert {item_partition(item, partitions) for item in items} == {partition}
        assert len(value) <= max_bytes + 400  # one event's signals at most past the bound
        read.append(InputRecord(TOPIC, partition, len(read), key, value))
        hot_bundles += "hot" in items
    assert hot_bundles > 1  # the hot item is split
    via_records = _aggregator(partitions)
    via_records.apply_records(read + [InputRecord(TOPIC, 0, 0, k, v) for k, v in fusion])
    direct = _aggregator(partitions)
    direct.fold.apply_all(expand_signals(signals))
    assert sorted(via_records.fold.items) == sorted(direct.fold.items)
    for item_id, item in direct.fold.items.items():
        assert via_records.fold.items[item_id].to_dict() | {"ingested_at": 0} == item.to_dict() | {
            "ingested_at": 0
        }
    assert via_records.fold.items["hot"].ingested_at == 42.0  # the event's Kafka time
    assert via_records.fusion is not None and via_records.fusion.fusion.updates == 200


def test_an_item_read_from_a_partition_its_key_does_not_map_to_is_refused() -> None:
    """An aggregator folds only the items of its partitions: a bundle written with another
    partition count (a worker configured otherwise) is refused item by item, counted."""
    from consumers.knowledge_follower import signal_records

    signals = [
        event_signal(f"m{n}", [], weight=1.0, ts=1.0, partition=0, offset=n) for n in range(40)
    ]
    records = signal_records(signals, [], {}, partitions=3)
    aggregator = _aggregator(8)
    read = [
        InputRecord(TOPIC, item_partition(k.decode(), 3), n, k, v)
        for n, (k, v) in enumerate(records)
    ]
    applied = aggregator.apply_records(read)
    owned = [f"m{n}" for n in range(40) if item_partition(f"m{n}", 8) == item_partition(f"m{n}", 3)]
    assert 0 < applied == len(owned) < 40
    assert sorted(aggregator.fold.items) == sorted(owned)
    value = aggregator.metrics.registry.get_sample_value
    assert value(
        "interest_item_signal_records_rejected_total", {"reason": "wrong_partition"}
    ) == 40 - len(owned)


def test_a_worker_counts_the_signals_topic_as_the_broker_does() -> None:
    """Bundles go to the partition of their items' keys among the topic's partitions as
    the broker (and so the aggregation) counts them, whatever the settings say."""
    from consumers.state_store import signal_partitions

    class Consumer:
        def __init__(self, found: set[int] | None) -> None:
            self.found = found

        def partitions_for_topic(self, topic: str) -> set[int] | None:
            assert topic == settings.topics.item_signals
            return self.found

    settings = Settings().replace(topics={"item_signals_partitions": 8})
    assert signal_partitions(Consumer({0, 1, 2}), settings) == 3
    assert signal_partitions(Consumer(set(range(8))), settings) == 8
    assert signal_partitions(Consumer(None), settings) == 8  # not created yet: the settings
