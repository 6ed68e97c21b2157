"""The worker's item-signal bundles (in columns) hold every signal of its events, in
order, and one own-item signal per event stands for all of the event's signals."""

from __future__ import annotations

import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.item_signals import (
    ItemSignal,
    SignalBuffer,
    SignalRecord,
    derive_signals,
    event_signal,
    expand_signals,
    group_by_item,
    parse_signal_records,
)
from interest_core.records import Rejected
from interest_core.signal_columns import encode_columns

_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=6
).filter(str.isprintable)
_numbers = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def _events(draw: st.DrawFn) -> tuple[list, dict]:  # type: ignore[type-arg]
    pool = draw(st.lists(_ids, min_size=2, max_size=12, unique=True))
    events = []
    stamps = {}
    for offset in range(draw(st.integers(1, 15))):
        item = draw(st.sampled_from(pool))
        history = draw(st.lists(st.sampled_from(pool), max_size=10))
        partition = draw(st.integers(0, 3))
        events.append(
            event_signal(
                item,
                history,
                weight=draw(_numbers),
                ts=draw(_numbers),
                partition=partition,
                offset=offset,
                ingested_at=draw(st.sampled_from([0.0, 1.5])),
                decay=draw(st.sampled_from([1.0, 0.85, 0.3, 1e-7])),
            )
        )
        if draw(st.booleans()):
            stamps[(partition, offset)] = draw(_numbers)
    return events, stamps


def _partition_of(partitions: int):  # type: ignore[no-untyped-def]
    return lambda item: zlib.crc32(item.encode()) % partitions


@settings(max_examples=300, deadline=None)
@given(
    _events(),
    st.integers(1, 4),
    st.sampled_from([1, 150, 600, 1 << 20]),
    st.sampled_from([-1, 64, 1 << 20]),
)
def test_bundles_in_columns_hold_every_signal_in_order(case, partitions, max_bytes, small) -> None:  # type: ignore[no-untyped-def]
    """Read back in the order written, the bundles give every item the signals that
    expanding the events gives it, in event order, stamped with the events' Kafka times;
    each bundle holds signals of its key's partition only. Both writers: the arrays'
    (``small_pairs=-1``) and plain Python's (small batches)."""
    events, stamps = case
    partition_of = _partition_of(partitions)
    want = {
        item_id: [
            s._replace(ingested_at=stamps.get((s.partition, s.offset)) or s.ingested_at)
            for s in group
        ]
        for item_id, group in group_by_item(expand_signals(events)).items()
    }
    got: dict[str, list[ItemSignal]] = {}
    for key, value in encode_columns(events, stamps, partition_of, max_bytes, small_pairs=small):
        held = parse_signal_records(key.encode(), value)
        assert held and all(isinstance(p, SignalRecord) for p in held)
        assert {partition_of(p.item_id) for p in held} == {partition_of(key)}  # type: ignore[union-attr]
        # about max_bytes at most, unless one event's signals alone pass it
        events_held = {(s.partition, s.offset) for p in held for s in p.signals}  # type: ignore[union-attr]
        assert max_bytes == 1 or len(value) <= max_bytes + 600 or len(events_held) == 1
        for record in held:
            got.setdefault(record.item_id, []).extend(record.signals)  # type: ignore[union-attr,arg-type]
    assert got == want


def test_a_small_bound_splits_a_batch_into_bundles_of_consecutive_events() -> None:
    events = [
        event_signal(
            f"m{n % 5}",
            [f"m{(n + k) % 5}" for k in range(1, 4)],
            weight=1.0,
            ts=float(n),
            partition=0,
            offset=n,
        )
        for n in range(200)
    ]
    one = encode_columns(events, {}, _partition_of(1), 1 << 20)
    split = encode_columns(events, {}, _partition_of(1), 2000)
    assert len(one) == 1 and len(split) > 5
    assert all(len(value) < 2000 + 600 for _, value in split)
    offsets = [orjson.loads(value)["events"]["o"] for _, value in split]
    assert [o for chunk in offsets for o in chunk] == list(range(200))  # each event once, in order


def test_the_outbox_keeps_one_signal_per_event_and_expands_to_the_derived_ones() -> None:
    buffer = SignalBuffer(decay=0.5)
    buffer.positive("a", ["b", "c", "b", "a", "d"], weight=2.0, ts=10.0, source=(1, 7))
    buffer.positive("b", [], weight=1.0, ts=11.0, source=(1, 8))
    own, _ = buffer.take()
    assert [s.item_id for s in own] == ["a", "b"]
    assert expand_signals(own) == derive_signals(
        "a", ["b", "c", "b", "a", "d"], weight=2.0, ts=10.0, partition=1, offset=7, decay=0.5
    ) + derive_signals("b", [], weight=1.0, ts=11.0, partition=1, offset=8, decay=0.5)
    assert [(s.item_id, s.pairs) for s in expand_signals(own)[1:4]] == [
        ("b", (("a", 1.0),)),
        ("c", (("a", 0.5),)),
        ("d", (("a", 0.25),)),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e", "own"]), max_size=12),
    st.sampled_from([1.0, 0.85, 0.5]),
)
def test_an_events_pairs_skip_itself_and_repeats_without_using_a_power(history, decay) -> None:  # type: ignore[no-untyped-def]
    """Distinct histories (the engine's) take the zipped powers, others the loop: both
    give each distinct other item ``decay ** j`` by its rank, as the same floats."""
    from interest_core.item_signals import event_signal

    want: list[tuple[str, float]] = []
    amount, done = 1.0, {"own"}
    for other in history:
        if other not in done:
            done.add(other)
            want.append((other, amount))
            amount *= decay
    signal = event_signal("own", history, weight=1.0, ts=1.0, partition=0, offset=0, decay=decay)
    assert list(signal.pairs) == want


def test_long_ids_count_toward_the_bound() -> None:
    """Ids may be 256 characters: a bundle still stays near its bound (the producer
    refuses a record over its request size)."""
    pool = [f"{n:03d}" + "x" * 250 for n in range(400)]
    events = [
        event_signal(
            pool[n % 400],
            [pool[(n * 7 + k) % 400] for k in range(1, 20)],
            weight=1.0,
            ts=float(n),
            partition=0,
            offset=n,
            decay=0.85,
        )
        for n in range(2000)
    ]
    bundles = encode_columns(events, {}, _partition_of(2), 64 * 1024)
    assert max(len(value) for _, value in bundles) < 64 * 1024 + 6000
    got: dict[str, list[ItemSignal]] = {}
    for key, value in bundles:
        for record in parse_signal_records(key.encode(), value):
            got.setdefault(record.item_id, []).extend(record.signals)  # type: ignore[union-attr]
    assert got == group_by_item(expand_signals(events))


def _bundle(ranked: bool = True) -> tuple[str, dict]:  # type: ignore[type-arg]
    """One bundle in columns: own signals on a and b, partner signals on a, b and c; the
    engine's amounts (powers of one decay, written as ranks) or others (written as is)."""
    events = [
        event_signal("a", ["b", "c"], weight=1.0, ts=10.0, partition=0, offset=0, decay=0.5),
        event_signal("b", ["a"], weight=2.0, ts=11.0, partition=0, offset=1, decay=0.5),
    ]
    if not ranked:
        events[0] = events[0]._replace(pairs=(("b", 0.3), ("c", 0.7)))
    ((key, value),) = encode_columns(events, {}, _partition_of(1), 1 << 20)
    return key, orjson.loads(value)


def test_the_engines_amounts_are_written_as_ranks_and_others_as_they_are() -> None:
    _, ranked = _bundle()
    _, plain = _bundle(ranked=False)
    assert ranked["decay"] == 0.5 and ranked["own"]["rank"] == [0, 1, 0]
    assert "amount" not in ranked["own"] and "amount" not in ranked["partners"]
    assert "decay" not in plain and plain["own"]["amount"] == [0.3, 0.7, 1.0]


def _edit(path: str, new: object, ranked: bool = True) -> list:  # type: ignore[type-arg]
    key, bundle = _bundle(ranked)
    *parents, last = path.split(".")
    node = bundle
    for name in parents:
        node = node[name]
    node[last] = new(node[last]) if callable(new) else new
    return parse_signal_records(key.encode(), orjson.dumps(bundle))


@pytest.mark.parametrize(
    ("path", "new", "reason"),
    [
        ("items", "abc", "bad_type:items"),
        ("items", lambda ids: [*ids[:-1], ""], "bad_type:items"),
        ("items", lambda ids: [*ids[:-1], "x\x00"], "bad_type:items"),
        ("events", [], "bad_columns"),
        ("events.p", lambda p: [str(v) for v in p], "bad_columns"),
        ("events.o", lambda o: [True for _ in o], "bad_columns"),  # a boolean is no offset
        ("events.o", lambda o: [-1 for _ in o], "bad_columns"),
        ("events.ts", lambda ts: ts[:-1], "bad_columns"),
        ("own.end", lambda end: end[::-1], "bad_columns"),
        ("own.end", lambda end: [*end[:-1], end[-1] + 1], "bad_columns"),
        ("own.rank", lambda r: ["1"] * len(r), "bad_columns"),
        ("own.rank", lambda r: [10_000] * len(r), "bad_columns"),
        ("decay", 0.0, "bad_columns"),
        ("decay", 1.5, "bad_columns"),
        ("decay", "0.5", "bad_columns"),
        ("partners.item", lambda i: [99 for _ in i], "bad_index"),
        ("own.event", lambda e: [7 for _ in e], "bad_index"),
    ],
)
def test_a_bundle_whose_columns_do_not_fit_is_refused_whole(path, new, reason) -> None:  # type: ignore[no-untyped-def]
    (refused,) = _edit(path, new)
    assert refused == Rejected(reason, refused.detail, refused.raw)


def test_a_bundle_keyed_by_an_item_it_holds_nothing_for_is_refused() -> None:
    _, bundle = _bundle()
    (refused,) = parse_signal_records(b"zzz", orjson.dumps(bundle))
    assert isinstance(refused, Rejected) and refused.reason == "key_mismatch"


@pytest.mark.parametrize(
    ("path", "new", "reason", "refused_item"),
    [
        ("own.n", lambda n: [-1.0, *n[1:]], "bad_value:n", "a"),
        ("own.w", lambda w: [*w[:-1], -2.0], "bad_value:w", "b"),
        ("own.amount", lambda a: [0.0, *a[1:]], "bad_pair", "a"),
        # a partner signal whose amount is not positive: its item alone is refused
        ("partners.amount", lambda a: [*a[:-1], -1.0], "bad_pair", None),
    ],
)
def test_an_item_with_a_malformed_signal_is_refused_and_the_others_kept(
    path, new, reason, refused_item
) -> None:  # type: ignore[no-untyped-def]
    ranked = not path.endswith("amount")
    good = {p.item_id: p for p in _edit("format", 3, ranked)}
    parsed = _edit(path, new, ranked)
    refused = [p for p in parsed if isinstance(p, Rejected)]
    kept = {p.item_id: p for p in parsed if isinstance(p, SignalRecord)}
    assert [r.reason for r in refused] == [reason]
    assert len(kept) == len(good) - 1
    assert all(kept[item] == good[item] for item in kept)  # the others are untouched
    if refused_item is not None:
        assert refused_item not in kept


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_damage_to_a_bundle_is_refused_with_a_reason_never_raised(data) -> None:  # type: ignore[no-untyped-def]
    key, bundle = _bundle(ranked=data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(1, 3))):
        node = bundle
        while True:  # walk down to a random place and put any JSON value there
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            where = data.draw(st.sampled_from(keys))
            if isinstance(node[where], dict | list) and data.draw(st.booleans()):
                node = node[where]
                continue
            node[where] = data.draw(_json)
            break
    parsed = parse_signal_records(key.encode(), orjson.dumps(bundle))
    assert parsed and all(isinstance(p, SignalRecord | Rejected) for p in parsed)
    for record in parsed:
        if isinstance(record, SignalRecord):  # what is kept is well formed
            assert all(s.partition >= 0 and s.offset >= 0 and s.count >= 0 for s in record.signals)
            assert all(a > 0 and o != record.item_id for s in record.signals for o, a in s.pairs)


def test_decays_read_from_records_are_not_kept() -> None:
    """The engine's decays are kept with their powers; a decay read from a record is not
    (a stream of distinct decays would otherwise grow the worker's memory)."""
    import interest_core.item_signals as item_signals

    key, bundle = _bundle()
    kept = len(item_signals._POWERS)
    for n in range(50):
        bundle["decay"] = 0.5 + n / 1000
        assert all(
            isinstance(p, SignalRecord)
            for p in parse_signal_records(key.encode(), orjson.dumps(bundle))
        )
    assert len(item_signals._POWERS) == kept


def _read_back(bundles: list[tuple[str, bytes]]) -> dict[str, list[ItemSignal]]:
    got: dict[str, list[ItemSignal]] = {}
    for key, value in bundles:
        for record in parse_signal_records(key.encode(), value):
            assert isinstance(record, SignalRecord)
            got.setdefault(record.item_id, []).extend(record.signals)  # type: ignore[arg-type]
    return got


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_ids, min_size=2, max_size=40, unique=True),
    st.data(),
    st.integers(1, 4),
    st.sampled_from([150, 1 << 20]),
    st.sampled_from([0.85, 1.0]),
)
def test_signals_kept_with_their_rows_are_written_as_from_their_ids(
    catalog, data, partitions, max_bytes, decay
) -> None:  # type: ignore[no-untyped-def]
    """The engine's outbox keeps each event's catalog rows beside its signal; the columns
    written from the rows hold the very signals the ids give (events with no pair, one
    pair, and histories holding the event's own item included)."""
    located, named = SignalBuffer(decay, catalog), SignalBuffer(decay)
    rows = st.integers(0, len(catalog) - 1)
    for offset in range(data.draw(st.integers(1, 30))):
        row = data.draw(rows)
        history = data.draw(st.lists(rows, max_size=12, unique=True))  # distinct, as the engine's
        others = [other for other in history if other != row]
        at = {"weight": 1.0 + offset, "ts": 100.0 + offset, "source": (offset % 3, offset)}
        named.positive(catalog[row], [catalog[h] for h in history], **at)
        located.positive_rows(row, others, **at)  # the engine's way: the signal made if read
    from_rows, from_ids = located.take()[0], named.take()[0]
    assert from_rows == from_ids and from_rows.located and not from_ids.located
    # read as the list of signals it stands for: by index (any order), slice, tail
    n = len(from_ids)
    assert len(from_rows) == n
    for i in data.draw(st.lists(st.integers(-n, n - 1), max_size=10)):
        assert from_rows[i] == from_ids[i]
    cut = data.draw(st.integers(0, n))
    tail = from_rows.since(cut)
    assert tail.located == (cut < n) and list(tail) == list(from_ids)[cut:] == from_rows[cut:]
    assert tail.widths() == [len(s.pairs) for s in list(from_ids)[cut:]]
    partition_of = _partition_of(partitions)
    want = _read_back(encode_columns(from_ids, {}, partition_of, max_bytes, small_pairs=-1))
    assert (
        _read_back(encode_columns(from_rows, {}, partition_of, max_bytes, small_pairs=-1)) == want
    )
    assert want == group_by_item(expand_signals(from_ids))


def test_one_signal_without_rows_makes_the_batch_written_from_its_ids() -> None:
    buffer = SignalBuffer(0.5, ["a", "b", "c"])
    buffer.positive_rows(0, [1], weight=1.0, ts=1.0, source=(0, 1))
    buffer.positive("c", ["a"], weight=1.0, ts=2.0, source=(0, 2))
    buffer.positive_rows(1, [2, 0], weight=1.0, ts=3.0, source=(0, 3))
    own, _ = buffer.take()
    assert not own.located
    assert [(s.item_id, s.offset, s.pairs) for s in own] == [
        ("a", 1, (("b", 1.0),)),
        ("c", 2, (("a", 1.0),)),
        ("b", 3, (("c", 1.0), ("a", 0.5))),
    ]
    assert _read_back(encode_columns(own, {}, _partition_of(1), 1 << 20, small_pairs=-1)) == (
        group_by_item(expand_signals(own))
    )
    assert buffer.take()[0].located is False  # empty: nothing to write from rows


def test_rows_are_told_apart_alike_by_a_mask_and_by_a_sort(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch's rows get the same ids and indices whether the catalog is small enough
    for a mask over its rows or so large that they are sorted."""
    from interest_core import signal_columns

    catalog = [f"m{n}" for n in range(50)]
    own_rows, pair_rows = [7, 3, 7, 49], [3, 0, 12, 7, 0, 49, 20]
    masked = signal_columns._ids_of_rows(own_rows, pair_rows, catalog)
    monkeypatch.setattr(signal_columns, "_DENSE_ROWS", -(1 << 20))
    sorted_ = signal_columns._ids_of_rows(own_rows, pair_rows, catalog)
    for ids, event_item, pair_item in (masked, sorted_):
        assert ids == ["m0", "m3", "m7", "m12", "m20", "m49"]
        assert [ids[i] for i in event_item] == [catalog[r] for r in own_rows]
        assert [ids[i] for i in pair_item] == [catalog[r] for r in pair_rows]
