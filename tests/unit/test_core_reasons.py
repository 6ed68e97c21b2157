"""Reasons a person reads: from the user's items, texts, labels and co-occurrence."""

from __future__ import annotations

import numpy as np

from interest_core.catalog import Catalog
from interest_core.cooccurrence import CoOccurrence
from interest_core.interest import RecentItem, UserState
from interest_core.reasons import (
    Anchors,
    content_reason,
    content_reasons,
    cooccurrence_reason,
    cooccurrence_reasons,
)
from interest_core.records import CatalogItem

DIM = 4


def _catalog() -> Catalog:
    catalog = Catalog(DIM)
    vectors = {
        "a": [1, 0, 0, 0],
        "a2": [0.99, 0.14, 0, 0],  # close to a
        "b": [0, 1, 0, 0],
        "c": [0, 0, 1, 0],
        "d": [0, 0, 0, 1],
    }
    for item_id, vector in vectors.items():
        item = CatalogItem(item_id, f"Title {item_id}", category="Jazz" if item_id == "d" else "")
        v = np.asarray(vector, dtype=np.float32)
        catalog.put(item, item_id, v / np.linalg.norm(v))
    return catalog


def _state(actions: list[tuple[str, float, str]]) -> UserState:
    state = UserState("u", DIM)
    for n, (item_id, weight, action) in enumerate(actions):
        state.remember_item(RecentItem(item_id, float(n), weight, action), 50, 100)
    return state


def test_content_reason_names_the_nearest_item_and_its_action() -> None:
    catalog = _catalog()
    state = _state([("a", 3.0, "rated 5"), ("b", 1.5, "clicked")])
    anchors = Anchors.of(state, catalog, [])
    assert content_reason(anchors, catalog, catalog.row("a2")) == "because you rated 'Title a' 5"
    state = _state([("a", 1.5, "clicked")])
    anchors = Anchors.of(state, catalog, [])
    assert content_reason(anchors, catalog, catalog.row("a2")) == "similar to 'Title a' you clicked"


def test_negative_items_are_never_anchors_nor_is_the_item_itself() -> None:
    catalog = _catalog()
    anchors = Anchors.of(_state([("a", -1.0, "disliked"), ("b", 1.0, "viewed")]), catalog, [])
    assert [i.item_id for i in anchors.items] == ["b"]
    only_self = Anchors.of(_state([("c", 1.0, "viewed")]), catalog, [])
    assert content_reason(only_self, catalog, catalog.row("c")) == "popular now"


def test_a_search_closer_than_any_item_explains_it() -> None:
    catalog = _catalog()
    state = _state([("b", 1.0, "viewed")])
    state.remember_text("late night jazz", np.asarray([0, 0, 1, 0], dtype=np.float32), 5.0)
    anchors = Anchors.of(state, catalog, [])
    reason = content_reason(anchors, catalog, catalog.row("c"))
    assert reason == "similar to your search 'late night jazz'"


def test_a_top_label_explains_an_item_no_anchor_is_close_to() -> None:
    catalog = _catalog()
    anchors = Anchors.of(_state([("b", 1.0, "viewed")]), catalog, ["Jazz"])
    assert content_reason(anchors, catalog, catalog.row("d")) == "matches your interest in Jazz"


def test_cooccurrence_reason_names_the_history_item_that_contributed_most() -> None:
    catalog = _catalog()
    pairs = CoOccurrence()
    a, b, c = catalog.row("a"), catalog.row("b"), catalog.row("c")
    pairs.add(c, [a])
    pairs.add(c, [b])
    pairs.add(c, [b])
    reason = cooccurrence_reason([a, b], [1.0, 1.0], pairs, catalog, c)
    assert reason == "people who liked 'Title b' also liked this"
    assert cooccurrence_reason([a], [1.0], pairs, catalog, catalog.row("d")) == "popular now"


def test_a_list_is_explained_as_each_of_its_items_alone() -> None:
    """A ranking explains its items together (one product per kind of anchor, one
    compiled co-occurrence call): each reason is the one the item gets alone, in order,
    whichever kind of reason it is (item, search, label, none; co-occurrence or not)."""
    catalog = _catalog()
    rows = [catalog.row(i) for i in ("a2", "d", "c", "a", "b", "a2")]
    kinds: set[str] = set()
    for text in (False, True):
        state = _state([("a", 3.0, "rated 5"), ("b", 1.0, "viewed")])
        if text:
            vector = np.asarray([0, 0, 0.6, 0.8], dtype=np.float32)
            state.remember_text("late night jazz", vector, 5.0)
        for labels in ([], ["Jazz"]):
            anchors = Anchors.of(state, catalog, labels)
            together = content_reasons(anchors, catalog, rows)
            assert together == [content_reason(anchors, catalog, row) for row in rows]
            kinds.update(reason.split(" ")[0] for reason in together)
    assert kinds == {"because", "matches", "similar"}  # items, labels and searches
    pairs = CoOccurrence()
    a, b, c, d = (catalog.row(i) for i in "abcd")
    for row, history in ((c, [a]), (c, [b]), (c, [b]), (d, [a])):
        pairs.add(row, history)
    rows = [c, d, a, 10_000, c]  # a row past the table: no reason of its own
    together = cooccurrence_reasons([a, b], [1.0, 1.0], pairs, catalog, rows)
    assert together == [cooccurrence_reason([a, b], [1.0, 1.0], pairs, catalog, r) for r in rows]
    assert together[:2] == [
        "people who liked 'Title b' also liked this",
        "people who liked 'Title a' also liked this",
    ]
    assert together[3] == "popular now"
