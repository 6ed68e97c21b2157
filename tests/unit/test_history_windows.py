"""The co-occurrence window kept event by event is the one read from the whole history,
whatever happens to the history and to the catalog's rows in between."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.catalog import Catalog
from interest_core.history import HISTORY_DECAY_PER_ITEM, HistoryWindows, recent_history
from interest_core.interest import RecentItem, UserState
from interest_core.records import CatalogItem

_POOL = [f"m{n}" for n in range(9)]


def _read_whole(state: UserState, catalog: Catalog, limit: int) -> tuple[list[int], list[float]]:
    """The window as the engine read it before it was kept (round 14's loop): the oracle."""
    rows: list[int] = []
    weights: list[float] = []
    decay = 1.0
    for item in reversed(state.recent):
        row = catalog.row_of.get(item.item_id)
        if item.weight <= 0.0 or row is None or row in rows:
            continue
        weights.append(item.weight * decay)
        rows.append(row)
        if len(rows) == limit:
            break
        decay *= HISTORY_DECAY_PER_ITEM
    return rows, weights


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(_POOL), st.sampled_from([2.0, 1.0, 0.5, -1.0])),
        st.tuples(st.just("trim"), st.integers(1, 4), st.just(0.0)),
        st.tuples(st.just("remove"), st.sampled_from(_POOL), st.just(0.0)),
        st.tuples(st.just("add"), st.sampled_from(_POOL), st.just(0.0)),
        st.tuples(st.just("restore"), st.just(""), st.just(0.0)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(_steps, st.integers(1, 5), st.integers(2, 8))
def test_the_window_kept_is_the_window_read(steps, limit, recent_limit) -> None:  # type: ignore[no-untyped-def]
    """Positive and negative events, repeats, items the catalog does not hold, the
    history's old end dropped (by its bound or by trimming), items added and removed,
    a state restored from bytes: after each, the kept window's rows and weights are
    :func:`recent_history`'s and the plain loop's, float for float."""
    catalog = Catalog(dim=4)
    for item_id in _POOL[:6]:
        catalog.put(CatalogItem(item_id, item_id), item_id, None)
    windows = HistoryWindows(catalog, limit)
    state = UserState("u1", 4)
    for n, (kind, name, weight) in enumerate(steps):
        if kind == "event":
            state.remember_item(RecentItem(name, float(n), weight, "clicked"), recent_limit, 100)
        elif kind == "trim":
            for _ in range(min(name, len(state.recent))):
                state.recent.popleft()
        elif kind == "remove":
            catalog.remove(name)
        elif kind == "add":
            catalog.put(CatalogItem(name, name), name, None)
        else:
            state = UserState.from_bytes(state.to_bytes(), dim=4)
        want = _read_whole(state, catalog, limit)
        assert recent_history(state, catalog, limit) == want
        assert windows.history(state) == want
        assert windows.rows(state) == want[0]


def test_a_user_forgotten_and_seen_again_starts_from_their_new_history() -> None:
    catalog = Catalog(dim=4)
    for item_id in _POOL:
        catalog.put(CatalogItem(item_id, item_id), item_id, None)
    windows = HistoryWindows(catalog, 3)
    state = UserState("u1", 4)
    for n, item_id in enumerate(["m1", "m2", "m3"]):
        state.remember_item(RecentItem(item_id, float(n), 1.0, "clicked"), 10, 100)
    assert windows.rows(state) == [catalog.row("m3"), catalog.row("m2"), catalog.row("m1")]
    windows.forget("u1")
    fresh = UserState("u1", 4)
    fresh.remember_item(RecentItem("m5", 9.0, 1.0, "clicked"), 10, 100)
    assert windows.history(fresh) == ([catalog.row("m5")], [1.0])
