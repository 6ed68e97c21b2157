"""Co-occurrence counts: sparse = dense scores, position decay, pruning, removal, and every
update path against a plain reference."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core import cooccurrence
from interest_core.cooccurrence import CoOccurrence
from tests.unit.cooccurrence_reference import ReferenceCoOccurrence


def _random(max_neighbours: int = 4) -> CoOccurrence:
    rng = np.random.default_rng(0)
    co = CoOccurrence(max_neighbours=max_neighbours)
    for _ in range(400):
        co.add(int(rng.integers(40)), [int(x) for x in rng.integers(40, size=6)], decay=0.85)
    return co


def test_sparse_scores_match_the_dense_scores() -> None:
    co = _random()
    history, weights = [3, 7, 11], [1.0, 0.5, 0.25]
    rows, scores = co.sparse_scores(history, weights)
    dense = np.zeros(40)
    dense[rows] = scores
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_allclose(dense, co.scores(history, weights, 40))
    assert co.sparse_scores([], [])[0].size == 0


def test_nearer_history_items_pair_more_strongly() -> None:
    co = CoOccurrence()
    co.add(0, [1, 2, 3], decay=0.5)  # newest first: 1 counts 1, 2 counts 0.5, 3 0.25
    assert co.similarity(0, 1) > co.similarity(0, 2) > co.similarity(0, 3) > 0.0
    assert co.similarity(1, 0) == co.similarity(0, 1)
    plain = CoOccurrence()
    plain.add(0, [1, 2, 3, 1])  # duplicates count once
    assert plain.similarity(0, 1) == plain.similarity(0, 3) == 1.0


def test_neighbours_stay_bounded_and_removal_forgets_pairs() -> None:
    co = _random(max_neighbours=4)
    for row in range(40):
        assert len(co.neighbours(row)[0]) <= 8
    rows, _ = co.neighbours(5)
    assert len(rows)
    co.remove(5)
    assert co.neighbours(5)[0].size == 0
    for row in range(40):
        assert 5 not in co.neighbours(row)[0].tolist()
        assert co.similarity(row, 5) == 0.0


_rows = st.integers(0, 12)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _rows, st.lists(_rows, max_size=8), st.sampled_from([1.0, 0.85])),
        st.tuples(st.just("one_side"), _rows, st.lists(_rows, max_size=5, unique=True)),
        st.tuples(st.just("set"), _rows, st.lists(_rows, max_size=5, unique=True)),
        st.tuples(st.just("remove"), _rows),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_counts_match_a_plain_reference(ops) -> None:  # type: ignore[no-untyped-def]
    """Every update path against dicts of pair counts (no pruning: room for all); after
    each, ``count_of`` of the row it touched (adds still queued) is the reference's."""
    co = CoOccurrence(max_neighbours=100)
    pairs: dict[int, dict[int, float]] = {}
    n: dict[int, float] = {}
    for op in ops:
        if op[0] == "add":
            _, row, history, decay = op
            co.add(row, history, decay=decay)
            n[row] = n.get(row, 0.0) + 1.0
            amount, done = 1.0, {row}
            for other in history:
                if other in done:
                    continue
                done.add(other)
                for a, b in ((row, other), (other, row)):
                    pairs.setdefault(a, {})[b] = pairs.setdefault(a, {}).get(b, 0.0) + amount
                amount *= decay
        elif op[0] == "one_side":
            _, row, others = op
            others = [o for o in others if o != row]
            co.add_one_side(row, 0.5, others, [0.25] * len(others))
            n[row] = n.get(row, 0.0) + 0.5
            for other in others:
                pairs.setdefault(row, {})[other] = pairs.setdefault(row, {}).get(other, 0.0) + 0.25
        elif op[0] == "set":
            _, row, others = op
            others = [o for o in others if o != row]
            counts = [float(i + 1) for i in range(len(others))]
            co.set_item(row, 3.0, np.array(others, dtype=np.int64), np.array(counts))
            n[row] = 3.0
            pairs[row] = dict(zip(others, counts, strict=True))
        else:
            _, row = op
            co.remove(row)
            n[row] = 0.0
            pairs.pop(row, None)
            for theirs in pairs.values():
                theirs.pop(row, None)
        # n_i as an event reads it: the queued adds count, nothing is applied for it
        assert co.count_of(op[1]) == pytest.approx(n.get(op[1], 0.0))
    for row in range(13):
        expected = dict(pairs.get(row, {}))
        assert co.pairs(row) == pytest.approx(expected)
        rows, sims = co.neighbours(row)
        assert sorted(rows.tolist()) == sorted(expected)
        for other, sim in zip(rows.tolist(), sims.tolist(), strict=True):
            norm = max(n.get(row, 0.0) * n.get(other, 0.0), 1.0) ** 0.5
            assert sim == pytest.approx(expected[other] / norm)
            assert co.similarity(row, other) == pytest.approx(expected[other] / norm)


_small_rows = st.integers(0, 9)
_pruning_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            _small_rows,
            st.lists(_small_rows, max_size=12),
            st.sampled_from([1.0, 0.85, 0.5]),
        ),
        st.tuples(
            st.just("one_side"),
            _small_rows,
            st.lists(_small_rows, max_size=8),
            st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0]), min_size=8, max_size=8),
        ),
        st.tuples(st.just("set"), _small_rows, st.lists(_small_rows, max_size=6, unique=True)),
        st.tuples(st.just("remove"), _small_rows),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_pruning_ops, st.sampled_from([1, 2, 3]))
def test_the_compiled_table_is_the_plain_one(ops, max_neighbours) -> None:  # type: ignore[no-untyped-def]
    """The compiled table against the plain Python one it replaced
    (``cooccurrence_reference.py``), pruning included: the same pairs in the same order,
    the same counts to the last bit."""
    fast = CoOccurrence(max_neighbours=max_neighbours)
    plain = ReferenceCoOccurrence(max_neighbours=max_neighbours)
    for op in ops:
        if op[0] == "add":
            _, row, history, decay = op
            fast.add(row, history, decay=decay)
            plain.add(row, history, decay=decay)
        elif op[0] == "one_side":
            _, row, others, amounts = op
            others = [o for o in others if o != row]
            fast.add_one_side(row, 0.5, others, amounts[: len(others)])
            plain.add_one_side(row, 0.5, others, amounts[: len(others)])
        elif op[0] == "set":
            _, row, others = op
            others = [o for o in others if o != row]
            counts = np.array([float(len(others) - i) for i in range(len(others))])
            fast.set_item(row, 3.0, np.array(others, dtype=np.int64), counts)
            plain.set_item(row, 3.0, np.array(others, dtype=np.int64), counts)
        else:
            fast.remove(op[1])
            plain.remove(op[1])
    for row in range(10):
        assert list(fast.pairs(row).items()) == list(plain.pairs(row).items())
        got, want = fast.neighbours(row), plain.neighbours(row)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
        assert fast.counts[row] == plain.counts[row]
        for other in range(10):
            assert fast.similarity(row, other) == plain.similarity(row, other)
        every = list(range(12))  # 10, 11: rows never seen
        assert fast.similarities(every, row).tolist() == [plain.similarity(r, row) for r in every]
        # The strongest contributor (the reason's anchor): the first largest positive.
        weights = [1.0, 0.5, 2.0, 1.0, 0.25, 1.0, 0.85, 1.0, 3.0, 1.0, 1.0, 0.5]
        parts = [plain.similarity(r, row) * w for r, w in zip(every, weights, strict=True)]
        best = max(parts)
        assert fast.strongest(every, weights, row) == (parts.index(best) if best > 0 else -1)
    history = [row for _, row, *_ in ops[:12]] + [10, 3]  # 10: a row never seen
    weights = [0.85**i for i in range(len(history))]
    got_rows, got_scores = fast.sparse_scores(history, weights)
    want_rows, want_scores = plain.sparse_scores(history, weights)
    assert got_rows.tolist() == want_rows.tolist()
    assert got_scores.tolist() == want_scores.tolist()  # the same sums, bit for bit


_pair_runs = st.lists(
    st.tuples(
        st.integers(0, 9),
        st.lists(
            st.tuples(st.integers(0, 11), st.sampled_from([0.25, 0.5, 1.0, 3.0])), max_size=12
        ),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(_pair_runs, st.sampled_from([1, 2, 3]))
def test_pairs_added_in_one_call_pair_by_pair_end_as_one_call_each(runs, max_neighbours) -> None:  # type: ignore[no-untyped-def]
    """A journal replays each partner's pair as its own update; ``pair_by_pair`` makes a
    run of them one call that prunes where the separate calls would (small blocks here:
    a pruning falls inside most runs) and leaves the same pairs, in the same order, to
    the last bit. Repeated partners included."""
    one_call = CoOccurrence(max_neighbours=max_neighbours)
    each_call = CoOccurrence(max_neighbours=max_neighbours)
    for row, pairs in runs:
        pairs = [(other, amount) for other, amount in pairs if other != row]
        others, amounts = [o for o, _ in pairs], [a for _, a in pairs]
        one_call.add_one_side(row, 0.0, others, amounts, pair_by_pair=True)
        for other, amount in pairs:
            each_call.add_one_side(row, 0.0, [other], [amount])
    for row in range(12):
        assert list(one_call.pairs(row).items()) == list(each_call.pairs(row).items())
        assert one_call.counts[row] == each_call.counts[row]
    # Without it, one call prunes once at its end: not the same table (the check above
    # would catch a pair_by_pair that did nothing).
    late, early = CoOccurrence(max_neighbours=1), CoOccurrence(max_neighbours=1)
    late.add_one_side(0, 0.0, [1, 2, 3, 3, 3], [1.0] * 5)
    early.add_one_side(0, 0.0, [1, 2, 3, 3, 3], [1.0] * 5, pair_by_pair=True)
    assert list(late.pairs(0).items()) == [(3, 3.0)]  # pruned once, at the end
    assert list(early.pairs(0).items()) == [(1, 1.0), (3, 2.0)]  # pruned at the third


def _twin_tables(
    *, seed: int, rows: int, adds: int, longest: int, max_neighbours: int
) -> tuple[CoOccurrence, ReferenceCoOccurrence]:
    """The compiled and the plain table after the same random adds (histories of 0 to
    ``longest - 1`` rows below ``rows``)."""
    rng = np.random.default_rng(seed)
    fast = CoOccurrence(max_neighbours=max_neighbours)
    plain = ReferenceCoOccurrence(max_neighbours=max_neighbours)
    for _ in range(adds):
        row = int(rng.integers(rows))
        history = [int(x) for x in rng.integers(rows, size=int(rng.integers(0, longest)))]
        fast.add(row, history, decay=0.85)
        plain.add(row, history, decay=0.85)
    return fast, plain


def test_the_pool_grows_and_compacts_without_losing_a_pair() -> None:
    """Many items with long histories: blocks move and the pool is repacked many times;
    every pair count is still the plain table's."""
    fast, plain = _twin_tables(seed=7, rows=500, adds=3_000, longest=40, max_neighbours=30)
    for row in range(500):
        assert list(fast.pairs(row).items()) == list(plain.pairs(row).items())
    assert len(fast._rows) > 1 << 14  # the pool grew past its first size


def test_neighbours_beyond_every_row_seen_so_far_are_read_safely() -> None:
    """The fleet's records name neighbours the table has not grown to yet (a new item's
    record arrives after its neighbour's): the compiled reads index per-row arrays by
    neighbour, so the table grows for them as it stores them."""
    co = CoOccurrence()
    co.set_item(3, 2.0, np.array([5_000], dtype=np.int64), np.array([4.0]))
    co.add_one_side(4, 1.0, [7_000], [1.0])
    rows, scores = co.sparse_scores([3, 4], [1.0, 0.5])
    assert rows.tolist() == [5_000, 7_000]
    # c / sqrt(max(n_i n_j, 1)): the neighbours have no count yet, so the norm is 1
    assert scores.tolist() == [4.0, 0.5]
    assert co.similarities([3], 5_000).tolist() == [4.0]
    assert len(co.counts) > 7_000


class _HeldChunk(Future):  # type: ignore[type-arg]
    """A chunk that stays in flight until it is waited for: the reads in between see the
    table while the background thread has not applied it (its worst case)."""

    def __init__(self, apply: Callable[..., None], args: tuple[object, ...]) -> None:
        super().__init__()
        self._apply, self._args = apply, args

    def done(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> None:
        self._apply(*self._args)


class _HoldingPool:
    def submit(self, apply: Callable[..., None], *args: object) -> Future:  # type: ignore[type-arg]
        return _HeldChunk(apply, args)


_background_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 11),
            st.lists(st.integers(0, 11), max_size=8),
            st.sampled_from([1.0, 0.85]),
        ),
        st.tuples(st.just("count"), st.integers(0, 13)),
        st.tuples(st.just("scores"), st.lists(st.integers(0, 11), max_size=5)),
        st.tuples(
            st.just("one_side"),
            st.integers(0, 9),
            st.lists(st.integers(0, 11), max_size=4),
        ),
        st.tuples(st.just("remove"), st.integers(0, 11)),
        st.tuples(st.just("hand_over")),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(_background_ops, st.sampled_from(["held", "thread"]))
def test_a_background_table_reads_as_the_table_without_its_thread(ops, pool) -> None:  # type: ignore[no-untyped-def]
    """Adds handed to the background thread in chunks of 2 (and the rest of the queue
    behind them when told): every read between them (the new item's count the engine
    reads per event included) and the final table are those of a table that applies its
    queue itself; with chunks held in flight until a read waits for them (several at
    once: they must land in order), and with the real thread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cooccurrence, "_CHUNK", 2)
        if pool == "held":
            patch.setattr(cooccurrence, "_settler_pool", _HoldingPool)
        background = CoOccurrence(max_neighbours=2, background=True)
        plain = CoOccurrence(max_neighbours=2)
        for op in ops:
            if op[0] == "add":
                _, row, history, decay = op
                background.add(row, history, decay=decay)
                plain.add(row, history, decay=decay)
            elif op[0] == "count":
                assert background.count_of(op[1]) == plain.count_of(op[1])
            elif op[0] == "scores":
                history = op[1]
                weights = [0.5 + i for i in range(len(history))]
                got, want = (
                    background.sparse_scores(history, weights),
                    plain.sparse_scores(history, weights),
                )
                assert got[0].tolist() == want[0].tolist()
                assert got[1].tolist() == want[1].tolist()
            elif op[0] == "one_side":
                _, row, others = op
                others = [o for o in others if o != row]
                background.add_one_side(row, 1.0, others, [1.0] * len(others))
                plain.add_one_side(row, 1.0, others, [1.0] * len(others))
            elif op[0] == "hand_over":  # the rest of the queue, behind the chunks in flight
                background.hand_over()
                plain.hand_over()
            else:
                background.remove(op[1])
                plain.remove(op[1])
        for row in range(12):
            assert list(background.pairs(row).items()) == list(plain.pairs(row).items())
            assert background.counts[row] == plain.counts[row]
        assert not background._flights  # the reads above waited for the last chunk


def test_the_count_read_while_a_chunk_is_in_flight_includes_it() -> None:
    """The count the engine reads per event, while the thread has not applied a chunk's
    pairs: it includes the chunk's adds (an add counts them itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cooccurrence, "_CHUNK", 2)
        patch.setattr(cooccurrence, "_settler_pool", _HoldingPool)
        co = CoOccurrence(background=True)
        co.add(5, [1, 2])
        co.add(5, [3])  # two queued: handed over, held in flight
        assert co._flights and co._size[5] == 0  # no pair applied yet
        co.add(6, [5])
        assert co.count_of(5) == 2.0 and co.count_of(6) == 1.0 and co.count_of(7) == 0.0
        assert co.counts[5] == 2.0 and not co._flights  # a read waits for the chunk
        assert co.pairs(5) == {1: 1.0, 2: 1.0, 3: 1.0, 6: 1.0}
        co.add(5_000, [5])  # past every row held: the arrays grow, nothing in flight
        assert co.count_of(5_000) == 1.0 and co.similarity(5_000, 5) > 0.0
        with pytest.raises(ValueError, match="negative"):
            co.add(-1, [5])


def test_sparse_scores_list_rows_the_same_whether_scanned_or_sorted() -> None:
    """Many rows touched: the rows come from a pass over every row's mark; few: from a
    sort. Both give the plain table's rows and sums, bit for bit."""
    fast, plain = _twin_tables(seed=11, rows=300, adds=2_000, longest=20, max_neighbours=50)
    rng = np.random.default_rng(12)
    fast.add(1_000, [1, 2])  # a row with two neighbours
    plain.add(1_000, [1, 2])
    width = len(fast.counts)
    for history in ([int(x) for x in rng.integers(300, size=30)], [1_000]):
        weights = [0.9**i for i in range(len(history))]
        got_rows, got_scores = fast.sparse_scores(history, weights)
        want_rows, want_scores = plain.sparse_scores(history, weights)
        assert got_rows.tolist() == want_rows.tolist()
        assert got_scores.tolist() == want_scores.tolist()
        scanned = len(got_rows) * cooccurrence._SCAN_OVER_SORT >= width
        assert scanned == (len(history) == 30)  # the long history scans, the short sorts
        assert not fast._sums.any() and not fast._seen.any()  # the scratch is left clean


class _ShutDownPool:
    def submit(self, apply: Callable[..., None], *args: object) -> Future:  # type: ignore[type-arg]
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def test_a_chunk_the_thread_cannot_take_is_applied_in_place() -> None:
    """While the interpreter shuts down the executor takes no work: the chunk is applied
    by the caller instead of failing the batch or being lost."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cooccurrence, "_CHUNK", 2)
        patch.setattr(cooccurrence, "_settler_pool", _ShutDownPool)
        co = CoOccurrence(background=True)
        co.add(5, [1, 2])
        co.add(5, [3])
        assert not co._flights and not co._queued  # applied, nothing in flight
        assert co.pairs(5) == {1: 1.0, 2: 1.0, 3: 1.0} and co.count_of(5) == 2.0


def test_chunks_in_flight_land_in_order_before_the_arrays_grow() -> None:
    """Two chunks held in flight, then an add naming a row past the per-row arrays: both
    chunks are applied, oldest first, before the arrays are replaced (the thread would
    otherwise write into arrays the table no longer holds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cooccurrence, "_CHUNK", 2)
        patch.setattr(cooccurrence, "_settler_pool", _HoldingPool)
        co, plain = CoOccurrence(background=True), CoOccurrence()
        adds = [(5, [1, 2]), (5, [3]), (6, [5, 1])]
        for row, history in adds:
            co.add(row, history)
            plain.add(row, history)
        co.hand_over()  # the third add, behind the first chunk
        assert len(co._flights) == 2 and co._size[5] == 0
        co.add(7, [5_000, 6])  # its history names a row the arrays do not hold yet
        plain.add(7, [5_000, 6])
        co.hand_over()
        assert len(co._flights) == 1  # the older two landed before the arrays grew
        for row in (1, 5, 6, 7, 5_000):
            assert list(co.pairs(row).items()) == list(plain.pairs(row).items())
