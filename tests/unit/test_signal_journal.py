"""The journal of own signals: what it finds for a row is what a plain list of entries
holds, in the same order, whatever was added, covered, dropped, bounded or compacted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core import signal_journal
from interest_core.item_signals import ItemSignal, OwnSignals
from interest_core.signal_journal import SignalJournal

ITEMS = [f"i{n}" for n in range(12)]
ROW_OF = {item: row for row, item in enumerate(ITEMS) if row != 11}  # i11: not held


def _signal(offset: int, item: int, partners: list[int]) -> ItemSignal:
    pairs = tuple((ITEMS[p], 0.5**k) for k, p in enumerate(partners))
    return ItemSignal(ITEMS[item], offset % 3, offset, float(offset), 0.0, 1.0, 1.0, pairs)


class Reference:
    """The plain journal: (row, signal, pair position) in journal order, oldest dropped
    first beyond the bound."""

    def __init__(self, max_entries: int) -> None:
        self.entries: list[tuple[int, ItemSignal, int]] = []
        self.max_entries = max_entries

    def add(self, signals: list[ItemSignal]) -> None:
        for signal in signals:
            for row, pos in [(ROW_OF.get(signal.item_id), -1)] + [
                (ROW_OF.get(other), k) for k, (other, _) in enumerate(signal.pairs)
            ]:
                if row is not None:
                    self.entries.append((row, signal, pos))
        del self.entries[: max(0, len(self.entries) - self.max_entries)]

    def of(self, row: int) -> list[tuple[ItemSignal, int]]:
        return [(s, p) for r, s, p in self.entries if r == row]

    def cover(self, row: int, marks: dict[int, int]) -> None:
        self.entries = [
            (r, s, p)
            for r, s, p in self.entries
            if r != row or s.offset > marks.get(s.partition, -1)
        ]


batches = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 11),
            st.lists(st.integers(0, 11), max_size=5, unique=True),
        ),
        max_size=6,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    batches=batches,
    ops=st.lists(
        st.tuples(
            st.sampled_from(["cover", "drop"]),
            st.integers(0, 11),
            st.dictionaries(st.integers(0, 2), st.integers(-1, 80)),
        ),
        max_size=12,
    ),
    max_entries=st.integers(1, 40),
    with_rows=st.sampled_from([False, True, "located"]),
    compact_from=st.sampled_from([1, 8, 65_536]),
)
def test_the_journal_finds_what_a_plain_list_holds(  # type: ignore[no-untyped-def]
    batches, ops, max_entries, with_rows, compact_from
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal_journal, "COMPACT_FROM", compact_from)
        _check(batches, ops, max_entries, with_rows)


def _check(batches, ops, max_entries, with_rows) -> None:  # type: ignore[no-untyped-def]
    journal = SignalJournal(ROW_OF, max_entries)
    reference = Reference(max_entries)
    offset = 0
    for b, batch in enumerate(batches):
        signals = []
        located = OwnSignals(ITEMS, 0.5)  # the engine's outbox: rows only
        for item, partners in batch:
            partners = [p for p in partners if p != item]
            if with_rows == "located":  # the engine records live catalog rows only
                if item == 11:
                    continue
                partners = [p for p in partners if p != 11]
                located.record(item, partners, (offset % 3, offset, float(offset), 1.0))
            signals.append(_signal(offset, item, partners))
            offset += 1
        if with_rows == "located":
            assert list(located) == signals
            journal.add(located, located.own_rows, located.pair_rows)
        elif with_rows:  # as the engine gives them: rows -1 for what the catalog lacks
            own_rows = [ROW_OF.get(s.item_id, -1) for s in signals]
            pair_rows = [ROW_OF.get(o, -1) for s in signals for o, _ in s.pairs]
            journal.add(signals, own_rows, pair_rows)
        else:
            journal.add(signals)
        reference.add(signals)
        if b < len(ops):  # one cover or drop after each batch
            op, row, marks = ops[b]
            entries = journal.find([row]).get(row, [])
            if op == "cover":
                journal.kill(journal.covered(entries, marks))
                reference.cover(row, marks)
            else:
                journal.kill(entries)  # the item deleted: every entry of its row
                reference.cover(row, {p: 10**9 for p in range(3)})
        found = journal.find(list(range(12)))
        for row in range(12):
            got = [(chunk.signals[s], p) for s, p, chunk, _ in found.get(row, [])]
            assert got == reference.of(row)
        assert len(journal) == len(reference.entries)
        assert 11 not in found  # never held: never journalled


def test_rows_and_pairs_must_agree() -> None:
    journal = SignalJournal(ROW_OF, 100)
    with pytest.raises(ValueError, match="pair rows"):
        journal.add([_signal(0, 1, [2, 3])], [1], [2])


def test_covered_entries_do_not_stay_held_behind_a_live_one() -> None:
    """One old entry never covered must not keep every later, covered chunk in memory."""
    journal = SignalJournal(ROW_OF, 10**6)
    journal.add([_signal(0, 1, [])])  # row 1: never covered
    for offset in range(1, 200_001, 1000):
        journal.add([_signal(o, 2, [3]) for o in range(offset, offset + 1000)])
        found = journal.find([2, 3])
        journal.kill(found[2] + found[3])
    assert len(journal) == 1
    assert journal._held <= 2 * signal_journal.COMPACT_FROM
    assert [(c.signals[s].offset, p) for s, p, c, _ in journal.find([1])[1]] == [(0, -1)]


def test_a_deleted_item_takes_its_entries_and_only_its_own() -> None:
    """A tombstone forgets what the journal holds under the item (its own signals and its
    pairs in others'); the other items' entries stay, the deleted item's signals in them
    included (they say what happened to those items)."""
    from interest_core.cooccurrence import CoOccurrence
    from interest_core.item_view import KnowledgeView
    from interest_core.trending import Trending

    view = KnowledgeView(ROW_OF, CoOccurrence(), Trending(3600.0), Trending(86400.0))
    a_then_b, b_then_a = _signal(1, 1, [2]), _signal(2, 2, [1])
    view.own([a_then_b, b_then_a])
    assert view.journalled == 4
    view.remove_many([ITEMS[1], ITEMS[3]])  # i3: nothing journalled
    assert view.journalled == 2
    found = view.journal.find([1, 2])
    assert 1 not in found
    assert [(c.signals[s], p) for s, p, c, _ in found[2]] == [(a_then_b, 0), (b_then_a, -1)]
