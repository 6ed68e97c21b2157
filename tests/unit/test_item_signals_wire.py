"""The worker's fast writer of item-signal bundles is byte for byte the reference
encoder, and one own-item signal per event stands for all of the event's signals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.item_signals import (
    SignalBuffer,
    derive_signals,
    encode_bundle,
    encoded_by_item,
    event_signal,
    expand_signals,
    group_by_item,
    join_bundle,
    join_item_entry,
    parse_signal_records,
)

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


@settings(max_examples=150, deadline=None)
@given(_events(), st.integers(1, 5))
def test_fast_records_are_the_reference_encoding(case, chunk) -> None:  # type: ignore[no-untyped-def]
    events, stamps = case
    reference = {
        item_id: [
            s._replace(ingested_at=stamps.get((s.partition, s.offset)) or s.ingested_at)
            for s in group
        ]
        for item_id, group in group_by_item(expand_signals(events)).items()
    }
    fast = encoded_by_item(events, stamps)
    assert list(fast) == list(reference)
    # Every item's signals in slices of ``chunk``, one entry per slice, all in one bundle.
    entries, groups = [], []
    for item_id, encoded in fast.items():
        signals = reference[item_id]
        for start in range(0, len(signals), chunk):
            entries.append(join_item_entry(item_id, encoded[start : start + chunk]))
            groups.append((item_id, signals[start : start + chunk]))
    value = join_bundle(entries)
    assert value == encode_bundle(groups)
    parsed = parse_signal_records(groups[0][0].encode(), value)
    assert [(p.item_id, p.signals) for p in parsed] == [  # type: ignore[union-attr]
        (item_id, tuple(signals)) for item_id, signals in groups
    ]


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
