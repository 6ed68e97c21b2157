"""The item-keyed stage, pure: signals folded per item give what the single-process
co-occurrence and trending compute, exactly once per source event, with deletion and
bounded neighbour lists; records round-trip and malformed ones are refused."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.cooccurrence import CoOccurrence
from interest_core.item_knowledge import ItemRecord, KnowledgeFold, parse_item_knowledge
from interest_core.item_signals import (
    FUSION_KEY,
    FusionFeedback,
    ItemSignal,
    derive_signals,
    encode_bundle,
    encode_fusion_record,
    encode_item_record,
    group_by_item,
    parse_signal_records,
)
from interest_core.item_view import KnowledgeView
from interest_core.records import Rejected
from interest_core.trending import Trending

DECAY = 0.85
WINDOW = 6
HALF_LIFE = 3600.0
LONG_HALF_LIFE = 30 * 86400.0
ROWS = {f"i{row:04d}": row for row in range(10)}


def _item(row: int) -> str:
    return f"i{row:04d}"  # id order = row order, so pruning ties break alike


def _log(
    n_events: int, n_users: int, n_items: int, seed: int
) -> list[tuple[int, int, float, float]]:
    """(user, item row, weight, ts) of positive events, ts increasing with jitter."""
    rng = random.Random(seed)
    events = []
    ts = 1_700_000_000.0
    for _ in range(n_events):
        ts += rng.uniform(0, 600)
        # Skewed items so some lists overflow and get pruned.
        row = min(int(rng.paretovariate(1.2)) - 1, n_items - 1)
        events.append((rng.randrange(n_users), row, rng.choice([1.0, 1.5, 3.0, 4.0]), ts))
    return events


def _single_process(events, max_neighbours):  # type: ignore[no-untyped-def]
    """What one engine computes today: CoOccurrence.add with the user's positive history
    (newest first, deduplicated, last WINDOW), Trending.add for both horizons."""
    co = CoOccurrence(max_neighbours=max_neighbours)
    trending, popularity = Trending(HALF_LIFE), Trending(LONG_HALF_LIFE)
    history: dict[int, list[int]] = {}
    for user, row, weight, ts in events:
        recent = _history(history.get(user, []))
        co.add(row, recent, decay=DECAY)
        trending.add(row, weight, ts)
        popularity.add(row, weight, ts)
        history.setdefault(user, []).append(row)
    return co, trending, popularity


def _history(items: list[int]) -> list[int]:
    out: list[int] = []
    for row in reversed(items):
        if row not in out:
            out.append(row)
        if len(out) == WINDOW:
            break
    return out


def _signals(events, partition_of=lambda user: 0):  # type: ignore[no-untyped-def]
    history: dict[int, list[int]] = {}
    out: list[ItemSignal] = []
    for offset, (user, row, weight, ts) in enumerate(events):
        recent = [_item(r) for r in _history(history.get(user, []))]
        out += derive_signals(
            _item(row),
            recent,
            weight=weight,
            ts=ts,
            partition=partition_of(user),
            offset=offset,
            decay=DECAY,
        )
        history.setdefault(user, []).append(row)
    return out


def _view(fold: KnowledgeFold, n_items: int, max_neighbours: int) -> KnowledgeView:
    view = KnowledgeView(
        {_item(row): row for row in range(n_items)},
        CoOccurrence(max_neighbours=max_neighbours),
        Trending(HALF_LIFE),
        Trending(LONG_HALF_LIFE),
    )
    changed, _ = fold.take_changed()
    for record in changed:
        # Through the wire, as a worker reads it.
        parsed = parse_item_knowledge(record.item_id.encode(), record.to_json())
        assert isinstance(parsed, ItemRecord)
        assert view.apply(parsed)
    return view


def _fold(max_neighbours: int) -> KnowledgeFold:
    return KnowledgeFold(
        max_neighbours=max_neighbours,
        trending_half_life_s=HALF_LIFE,
        popularity_half_life_s=LONG_HALF_LIFE,
    )


@pytest.mark.parametrize("max_neighbours", [3, 200])
def test_fold_equals_single_process_cooccurrence_and_trending(max_neighbours: int) -> None:
    n_items = 60
    events = _log(3000, 40, n_items, seed=max_neighbours)
    co, trending, popularity = _single_process(events, max_neighbours)
    fold = _fold(max_neighbours)
    assert fold.apply_all(_signals(events)) == len(_signals(events))
    view = _view(fold, n_items, max_neighbours)
    for row in range(n_items):
        expected, got = co.pairs(row), view.cooccurrence.pairs(row)
        assert got.keys() == expected.keys(), row
        for other, count in expected.items():
            assert got[other] == pytest.approx(count, rel=1e-12)
    np.testing.assert_allclose(view.cooccurrence.counts[:n_items], co.counts[:n_items])
    now = events[-1][3]
    np.testing.assert_allclose(
        view.trending.scores(now, n_items), trending.scores(now, n_items), rtol=1e-9
    )
    np.testing.assert_allclose(
        view.popularity.scores(now, n_items), popularity.scores(now, n_items), rtol=1e-9
    )
    if max_neighbours == 3:
        unbounded, _, _ = _single_process(events, 10_000)
        assert max(len(unbounded.pairs(r)) for r in range(n_items)) > 20  # pruning happened
        assert max(len(co.pairs(r)) for r in range(n_items)) <= 6


def test_users_spread_over_partitions_fold_to_the_same_knowledge() -> None:
    """Signals of 4 workers, interleaved by partition, still count every pair once."""
    events = _log(2000, 50, 40, seed=7)
    co, _, _ = _single_process(events, 200)
    signals = _signals(events, partition_of=lambda user: user % 4)
    random.Random(1).shuffle(signals)  # arrival order across items does not matter...
    by_source = sorted(signals, key=lambda s: (s.partition, s.offset))  # ...within one, it does
    fold = _fold(200)
    fold.apply_all(by_source)
    view = _view(fold, 40, 200)
    for row in range(40):
        expected, got = co.pairs(row), view.cooccurrence.pairs(row)
        assert got.keys() == expected.keys()
        for other in expected:
            assert got[other] == pytest.approx(expected[other])


def test_each_source_event_is_applied_once() -> None:
    events = _log(500, 20, 30, seed=3)
    signals = _signals(events)
    once, twice = _fold(200), _fold(200)
    once.apply_all(signals)
    twice.apply_all(signals[:300])
    # A worker crashed and re-processed from an earlier committed offset.
    twice.apply_all(signals[100:])
    twice.apply_all(signals)
    assert twice.duplicates == 200 + len(signals)
    for item_id, item in once.items.items():
        other = twice.items[item_id]
        assert other.count == item.count
        assert other.neighbours == item.neighbours
        assert other.trending.value == item.trending.value


def test_restored_fold_dedupes_exactly_by_the_watermarks_in_the_records() -> None:
    """An aggregator published up to signal 300, committed its input only up to 200,
    crashed, restored the published records and replayed from 200."""
    events = _log(600, 20, 30, seed=5)
    signals = _signals(events)
    reference = _fold(200)
    reference.apply_all(signals)
    first = _fold(200)
    first.apply_all(signals[:300])
    published, _ = first.take_changed()
    restored = _fold(200)
    for record in published:
        parsed = parse_item_knowledge(None, record.to_json())
        assert isinstance(parsed, ItemRecord)
        restored.load(parsed)
    restored.apply_all(signals[200:])
    assert restored.duplicates == sum(1 for s in signals[200:300])
    assert restored.items.keys() == reference.items.keys()
    for item_id, item in reference.items.items():
        assert restored.items[item_id].to_dict() | {"version": 0} == item.to_dict() | {"version": 0}


def test_deleting_an_item_removes_it_from_every_neighbour_list() -> None:
    events = _log(800, 20, 25, seed=11)
    fold = _fold(200)
    fold.apply_all(_signals(events))
    fold.take_changed()
    victim = _item(0)  # the most popular item: in many lists
    holders = [i for i, item in fold.items.items() if victim in item.neighbours]
    assert len(holders) > 3
    fold.delete_item(victim)
    assert victim not in fold.items
    assert all(victim not in item.neighbours for item in fold.items.values())
    changed, removed = fold.take_changed()
    assert removed == [victim]
    assert sorted(r.item_id for r in changed) == sorted(holders)
    # Late signals naming it are ignored; it learns again once re-listed.
    late = derive_signals(_item(1), [victim], weight=1.0, ts=2e9, partition=0, offset=10**6)
    fold.apply_all(late)
    assert victim not in fold.items and victim not in fold.items[_item(1)].neighbours
    fold.restore_item(victim)
    fold.apply_all(
        derive_signals(victim, [_item(1)], weight=1.0, ts=2e9, partition=0, offset=10**6 + 1)
    )
    assert fold.items[victim].count == 1.0


def test_versions_grow_once_per_publication() -> None:
    fold = _fold(200)
    fold.apply_all(derive_signals("a", ["b"], weight=1.0, ts=1.0, partition=0, offset=0))
    fold.apply_all(derive_signals("a", ["c"], weight=1.0, ts=2.0, partition=0, offset=1))
    changed, _ = fold.take_changed()
    assert {r.item_id: r.version for r in changed} == {"a": 1, "b": 1, "c": 1}
    fold.apply_all(derive_signals("b", ["a"], weight=1.0, ts=3.0, partition=0, offset=2))
    changed, _ = fold.take_changed()
    assert {r.item_id: r.version for r in changed} == {"a": 2, "b": 2}
    assert fold.take_changed() == ([], [])


def test_view_ignores_stale_versions_and_other_half_lives() -> None:
    fold = _fold(200)
    fold.apply_all(derive_signals("i0001", ["i0002"], weight=1.0, ts=1.0, partition=0, offset=0))
    (old, *_), _ = fold.take_changed()
    old_copy = parse_item_knowledge(None, old.to_json())
    fold.apply_all(derive_signals("i0001", ["i0003"], weight=1.0, ts=2.0, partition=0, offset=1))
    fold.take_changed()
    new_copy = parse_item_knowledge(None, fold.items["i0001"].to_json())
    assert isinstance(old_copy, ItemRecord) and isinstance(new_copy, ItemRecord)
    view = KnowledgeView(ROWS, CoOccurrence(), Trending(HALF_LIFE), Trending(LONG_HALF_LIFE))
    assert view.apply(new_copy)
    assert not view.apply(old_copy)
    assert view.cooccurrence.pairs(1) == {2: 1.0, 3: 1.0}
    other = KnowledgeView(ROWS, CoOccurrence(), Trending(60.0), Trending(LONG_HALF_LIFE))
    assert not other.apply(new_copy)
    assert view.refused == {"stale_version": 1} and other.refused == {"half_life_mismatch": 1}


def test_view_maps_neighbours_the_catalog_learns_later() -> None:
    known = {"a": 0, "b": 1}
    view = KnowledgeView(known, CoOccurrence(), Trending(HALF_LIFE), Trending(LONG_HALF_LIFE))
    fold = _fold(200)
    fold.apply_all(derive_signals("a", ["b", "c"], weight=1.0, ts=1.0, partition=0, offset=0))
    for record in fold.take_changed()[0]:
        view.apply(record)
    assert view.cooccurrence.pairs(0) == {1: 1.0}
    known["c"] = 2
    view.remap(["c"])
    assert view.cooccurrence.pairs(0) == {1: 1.0, 2: 1.0}  # decay 1 by default
    assert view.cooccurrence.pairs(2) == {0: 1.0}
    view.remove("c")
    assert view.cooccurrence.pairs(2) == {}


# ------------------------------------------------------------------ wire formats


def test_signal_records_round_trip() -> None:
    signals = derive_signals(
        "m1", ["m2", "m3"], weight=1.5, ts=10.0, partition=2, offset=9, ingested_at=11.0
    )
    groups = group_by_item(signals)
    for item_id, group in groups.items():  # format 1: one item per record
        (parsed,) = parse_signal_records(item_id.encode(), encode_item_record(item_id, group))
        assert not isinstance(parsed, Rejected)
        assert parsed.item_id == item_id and parsed.signals == tuple(group)
    bundle = parse_signal_records(b"m1", encode_bundle(list(groups.items())))
    assert [(p.item_id, p.signals) for p in bundle] == [  # type: ignore[union-attr]
        (item_id, tuple(group)) for item_id, group in groups.items()
    ]
    feedback = [FusionFeedback(2, 9, 11.0, (0.1, -0.1, 0.0))]
    (parsed,) = parse_signal_records(
        FUSION_KEY.encode(), encode_fusion_record(feedback), fusion_width=3
    )
    assert not isinstance(parsed, Rejected) and parsed.fusion == tuple(feedback)


def test_a_bundle_refuses_its_bad_entries_one_by_one_and_keeps_the_others() -> None:
    good = derive_signals("m1", ["m2"], weight=1.0, ts=1.0, partition=0, offset=3)
    value = orjson.loads(encode_bundle([("m1", good[:1]), ("m2", good[1:])]))
    value["items"][1:1] = [
        "m9",
        {"item_id": "m8", "signals": [{"p": -1, "o": 0, "ts": 1.0}]},
        {"item_id": "", "signals": []},
        {"item_id": "m7", "signals": [{"p": 0, "o": 0, "ts": 1.0, "pairs": [["m7", 1.0]]}]},
        {"item_id": "m6", "signals": [[0, 1, 1.0, 0.0, "m1"]]},  # a partner's array, short
        {"item_id": "m5", "signals": [[0, 1, 1.0, 0.0, "m1", -1.0]]},
        {"item_id": "m4", "signals": [[0, 1, "1", 0.0, "m1", 1.0]]},
        {"item_id": "m3", "signals": [[0, 1, 1.0, None, "m1", 1.0]]},
    ]
    parsed = parse_signal_records(b"m1", orjson.dumps(value))
    assert [p.reason if isinstance(p, Rejected) else p.item_id for p in parsed] == [
        "m1",
        "bad_type:entry",
        "bad_source",
        "bad_type:item_id",
        "bad_pair",
        "bad_type:signal",
        "bad_pair",
        "bad_type:ts",
        "bad_type:at",
        "m2",
    ]
    assert parsed[-1].signals == (good[1],)  # type: ignore[union-attr]  # a partner's array
    whole = [
        (b"m2", orjson.dumps(value), "key_mismatch"),  # the key is not the first item
        (b"m1", b'{"format": 2, "items": []}', "missing_field:items"),
        (b"m1", b'{"format": 2, "items": {"m1": []}}', "missing_field:items"),
        (FUSION_KEY.encode(), orjson.dumps(value), "bad_format"),
        (b"m1", b'{"format": 3, "items": []}', "bad_columns"),  # columns, not entries
        (b"m1", b'{"format": 4, "items": []}', "bad_format"),
        # a partner's array form belongs to bundles only
        (
            b"m1",
            b'{"format": 1, "item_id": "m1", "signals": [[0, 1, 1.0, 0.0, "m2", 1.0]]}',
            "bad_type:signal",
        ),
    ]
    for key, raw, reason in whole:
        (refused,) = parse_signal_records(key, raw)
        assert isinstance(refused, Rejected) and refused.reason == reason, (key, raw)


def _signal_obj(**entry: object) -> bytes:
    base = {"p": 0, "o": 1, "ts": 1.0, "at": 0.0, "n": 1.0, "w": 1.0, "pairs": [["m2", 1.0]]}
    base.update(entry)
    return orjson.dumps({"format": 1, "item_id": "m1", "signals": [base]})


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, _signal_obj(), "missing_key"),
        (b"m1", None, "tombstone"),
        (b"m1", b"{", "not_json"),
        (b"m1", b"[]", "not_object"),
        (b"m1", b'{"format": 9}', "bad_format"),
        (b"m9", _signal_obj(), "key_mismatch"),
        (b"m1", _signal_obj(p=-1), "bad_source"),
        (b"m1", _signal_obj(o="7"), "bad_source"),
        (b"m1", _signal_obj(ts=None), "bad_type:ts"),
        (b"m1", _signal_obj(n=-1), "bad_value:n"),
        (b"m1", _signal_obj(w="x"), "bad_value:w"),
        (b"m1", _signal_obj(pairs=[["m1", 1.0]]), "bad_pair"),
        (b"m1", _signal_obj(pairs=[["m2", -1.0]]), "bad_pair"),
        (b"m1", _signal_obj(pairs=[["m2"]]), "bad_pair"),
        (b"m1", _signal_obj(pairs="m2"), "bad_type:pairs"),
        (
            FUSION_KEY.encode(),
            b'{"format": 1, "fusion": [{"p": 0, "o": 1, "g": [1e400]}]}',
            "not_json",
        ),
        (
            FUSION_KEY.encode(),
            b'{"format": 1, "fusion": [{"p": 0, "o": 1, "g": ["a"]}]}',
            "bad_value:g",
        ),
        (
            FUSION_KEY.encode(),
            b'{"format": 1, "fusion": [{"p": 0, "o": 1, "g": [1.0]}]}',
            "wrong_width",
        ),
    ],
)
def test_bad_signal_records_are_refused_with_a_reason(key, value, reason) -> None:  # type: ignore[no-untyped-def]
    (parsed,) = parse_signal_records(key, value, fusion_width=3)
    assert isinstance(parsed, Rejected)
    assert parsed.reason == reason


def _item_obj(**changes: object) -> bytes:
    fold = _fold(200)
    fold.apply_all(derive_signals("m1", ["m2"], weight=1.0, ts=1.0, partition=0, offset=0))
    obj = fold.items["m1"].to_dict()
    obj.update(changes)
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": 2}, "bad_format"),
        ({"item_id": ""}, "bad_type:item_id"),
        ({"version": -1}, "bad_version"),
        ({"count": -1}, "bad_value:count"),
        ({"neighbours": [["m1", 1.0]]}, "bad_neighbours"),
        ({"neighbours": [["m2", 0]]}, "bad_neighbours"),
        ({"neighbours": {"m2": 1}}, "bad_neighbours"),
        ({"trending": [1.0, 1.0]}, "bad_decay:trending"),
        ({"popularity": [-1.0, 1.0, 5.0]}, "bad_decay:popularity"),
        ({"trending": [1.0, 1.0, 0.0]}, "bad_decay:trending"),
        ({"watermarks": {"x": 1}}, "bad_watermarks"),
        ({"watermarks": {"0": "1"}}, "bad_watermarks"),
    ],
)
def test_bad_item_records_are_refused_with_a_reason(
    changes: dict[str, object], reason: str
) -> None:
    parsed = parse_item_knowledge(b"m1", _item_obj(**changes))
    assert isinstance(parsed, Rejected) and parsed.reason == reason
    assert isinstance(parse_item_knowledge(b"m2", _item_obj()), Rejected)  # key mismatch
    assert isinstance(parse_item_knowledge(b"m1", b"\xff"), Rejected)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(parse_item_knowledge(b"m1", raw), Rejected)
    assert all(isinstance(p, Rejected) for p in parse_signal_records(b"m1", raw))


def test_a_restored_record_loses_neighbours_deleted_meanwhile() -> None:
    fold = _fold(200)
    fold.apply_all(derive_signals("a", ["b", "c"], weight=1.0, ts=1.0, partition=0, offset=0))
    fold.take_changed()
    restored = _fold(200)
    restored.delete_item("b")  # the catalog deleted it while nobody held "a"
    parsed = parse_item_knowledge(None, fold.items["a"].to_json())
    assert isinstance(parsed, ItemRecord)
    restored.load(parsed)
    assert restored.items["a"].neighbours == {"c": 1.0}
    changed, _ = restored.take_changed()
    assert [r.item_id for r in changed] == ["a"]  # republished without it
