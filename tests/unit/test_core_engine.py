"""Engine rules: deleted items never come back, consumed items are filtered, strategies,
unknown items rejected, delete_user, versions, reasons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.describe import describe_state
from interest_core.encoder import HashingEncoder
from interest_core.engine import STRATEGIES, Engine
from interest_core.interest import UserState
from interest_core.records import CatalogItem, Event, UserDeletion
from interest_core.settings import Settings

GENRES = ("Jazz", "Rock", "Sci-Fi", "Drama")


def catalog(n: int = 40) -> list[CatalogItem]:
    return [
        CatalogItem(
            f"i{i}",
            f"{GENRES[i % 4]} title {i}",
            category=GENRES[i % 4],
            tags=(GENRES[i % 4].lower(),),
        )
        for i in range(n)
    ]


def engine_with(strategy: str = "hybrid", n: int = 40) -> Engine:
    engine = Engine(HashingEncoder(dim=64), Settings(), strategy=strategy)
    engine.upsert_items(catalog(n))
    return engine


def clicks(user: str, items: list[int], start: float = 0.0) -> list[Event]:
    return [
        Event(user, start + j, "click", f"{user}-{start}-{j}", item_id=f"i{i}")
        for j, i in enumerate(items)
    ]


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Event], set[str]]:
    events = []
    for j in range(draw(st.integers(5, 60))):
        user = f"u{draw(st.integers(0, 4))}"
        item = f"i{draw(st.integers(0, 19))}"
        events.append(Event(user, float(j), "click", f"e{j}", item_id=item))
    deleted = {f"i{i}" for i in draw(st.sets(st.integers(0, 19), min_size=1, max_size=8))}
    return events, deleted


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=15, deadline=None)
@given(data=streams())
def test_deleted_items_never_come_back(strategy: str, data: tuple[list[Event], set[str]]) -> None:
    events, deleted = data
    engine = engine_with(strategy, n=20)
    half = len(events) // 2
    engine.learn(events[:half])  # co-occurrence and trending know the items
    engine.delete_items(deleted)
    outcome = engine.process(events[half:])
    assert {events[half + i].item_id for i, _ in outcome.rejected} <= deleted
    assert all(r.reason == "unknown_item" for _, r in outcome.rejected)
    lists = engine.recommend([f"u{i}" for i in range(6)], 20, exclude_seen=False)
    for rec in outcome.recommendations:
        assert not {i.item_id for i in rec.items} & deleted
    for items in lists.values():
        assert not {i.item_id for i in items} & deleted
        assert len(items) <= 20 - len(deleted)


@st.composite
def catalog_stories(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Clicks, deletions, returns and new items in any order, and moves of a user's
    state to another engine whose catalog has other rows."""
    kinds = st.sampled_from(["click"] * 6 + ["delete", "return", "add", "move"])
    return [(draw(kinds), draw(st.integers(0, 29))) for _ in range(draw(st.integers(1, 40)))]


@settings(max_examples=60, deadline=None)
@given(story=catalog_stories())
def test_the_seen_mask_follows_catalog_changes(story: list[tuple[str, int]]) -> None:
    """The mask of a user's seen items (made from rows kept with them) always equals
    the mask made by looking each seen id up in the catalog of the moment: items
    deleted, items back under a new row, new items, a state restored elsewhere."""
    engine = engine_with("hybrid", n=20)
    added = 20
    for j, (kind, i) in enumerate(story):
        if kind == "click":
            engine.learn([Event("u", float(j), "click", f"e{j}", item_id=f"i{i % added}")])
        elif kind == "delete":
            engine.delete_items([f"i{i % added}"])
        elif kind == "return":
            engine.upsert_items([c for c in catalog(added) if c.item_id == f"i{i % added}"])
        elif kind == "add":
            added += 1
            engine.upsert_items([catalog(added)[-1]])
        elif (blob := engine.export_user("u")) is not None:  # move
            moved = Engine(HashingEncoder(dim=64), Settings(), strategy="hybrid")
            moved.upsert_items(list(reversed(catalog(added))))  # other rows
            moved.import_user("u", blob)
            engine = moved
        state = engine.users.get("u")
        if state is None:
            continue
        mask = engine.candidates.blocked([], state)
        expected = ~engine.catalog.alive[: engine.catalog.rows_allocated]
        expected[[r for r in map(engine.catalog.row_of.get, state.seen) if r is not None]] = True
        assert np.array_equal(mask, expected)
        listed = {i.item_id for i in engine.recommend(["u"], 40)["u"]}
        assert not listed & set(state.seen)


def test_reupserting_unchanged_items_encodes_nothing() -> None:
    calls: list[int] = []
    inner = HashingEncoder(dim=32)

    class Counting:
        name, dim = "c", 32

        def encode(self, texts):  # type: ignore[no-untyped-def]
            calls.append(len(texts))
            return inner.encode(texts)

    engine = Engine(Counting(), Settings(), strategy="dynamic")
    engine.upsert_items(catalog(10))
    engine.upsert_items(catalog(10))
    assert calls == [10]
    changed = CatalogItem("i3", "a brand new title", category="Jazz")
    engine.upsert_items([*catalog(10), changed])
    assert calls == [10, 1]
    assert engine.catalog_size == 10


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_consumed_and_excluded_items_are_filtered(strategy: str) -> None:
    engine = engine_with(strategy)
    engine.learn(clicks("a", [0, 4, 8, 12]) + clicks("b", [0, 4, 8, 16, 20, 24]))
    items = {i.item_id for i in engine.recommend(["a"], 10)["a"]}
    assert not items & {"i0", "i4", "i8", "i12"}
    # Content strategies can fill any list; trending and co-occurrence only know the
    # items somebody acted on (i16, i20, i24 here).
    assert len(items) == (3 if strategy in ("popular", "itemknn") else 10)
    extra = {"a": ["i16", "i20", "i24"]}
    items = {i.item_id for i in engine.recommend(["a"], 10, exclude=extra)["a"]}
    assert not items & {"i0", "i4", "i8", "i12", "i16", "i20", "i24"}
    assert len(items) == (0 if strategy in ("popular", "itemknn") else 10)
    everything = {i.item_id for i in engine.recommend(["a"], 40, exclude_seen=False)["a"]}
    assert "i0" in everything


def test_process_outcome() -> None:
    engine = engine_with()
    events = [
        *clicks("a", [0, 4]),
        Event("a", 5.0, "search", "s1", text="mail me at a@b.com about jazz"),
        Event("b", 6.0, "click", "x1", item_id="missing"),
        Event("c", 7.0, "click", "c1", item_id="i1"),
        UserDeletion.of("c", 8.0, "c2"),
    ]
    outcome = engine.process(events, published_at=100.0)
    assert [r.user_id for r in outcome.recommendations] == ["a"]
    assert [(events[i].event_id, r.reason) for i, r in outcome.rejected] == [("x1", "unknown_item")]
    assert outcome.changed_users == ["a"] and outcome.deleted_users == ["c"]
    assert outcome.stats.events_applied == 4 and outcome.stats.texts_encoded == 0
    rec = outcome.recommendations[0]
    assert rec.version == 1 and rec.event_ts == 5.0 and rec.trigger_event_id == "s1"
    assert rec.published_at == 100.0 and rec.model == "hashing" and len(rec.items) == 10
    assert rec.interests and rec.interests[0].label in (*GENRES, "jazz")
    assert rec.intent is not None
    assert engine.describe_user("c") is None
    assert "a@b.com" not in str(engine.describe_user("a"))
    second = engine.process(clicks("a", [8], start=50.0))
    assert second.recommendations[0].version == 2


def test_reasons_are_readable() -> None:
    engine = engine_with("hybrid")
    engine.learn(clicks("b", [1, 5, 9, 13]) + clicks("c", [1, 5, 9, 13]))
    engine.learn([Event("a", 20.0, "rate", "r1", item_id="i1", rating=5.0)])
    reasons = [i.reason for i in engine.recommend(["a"], 10)["a"]]
    assert all(reasons)
    allowed = (
        "because you rated",
        "similar to",
        "matches your interest in",
        "people who liked",
        "popular now",
    )
    assert all(r.startswith(allowed) for r in reasons), reasons
    assert any("'Rock title 1'" in r for r in reasons)


def test_new_user_gets_trending() -> None:
    engine = engine_with("dynamic")
    engine.learn(clicks("b", [3, 3, 7]))
    items = engine.recommend(["nobody"], 3)["nobody"]
    assert [i.item_id for i in items][:2] == ["i3", "i7"]
    assert items[0].reason == "popular now"


def test_forget_and_evict() -> None:
    engine = engine_with()
    engine.process(clicks("a", [1]), published_at=1000.0)
    engine.process(clicks("b", [2]), published_at=2000.0)
    assert engine.users_held == 2
    assert engine.evict_idle(1500.0) == ["a"]
    assert engine.forget_user("b") and not engine.forget_user("b")
    assert engine.users_held == 0


def test_evict_least_active_keeps_the_most_recent_users() -> None:
    engine = engine_with()
    for n, user in enumerate(["a", "b", "c", "d"]):
        engine.process(clicks(user, [n]), published_at=1000.0 + n)
    assert engine.evict_least_active(4) == []
    assert engine.evict_least_active(2) == ["a", "b"]
    assert sorted(engine.users) == ["c", "d"]
    assert engine.evict_least_active(0) == ["c", "d"] and engine.users_held == 0


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        Engine(HashingEncoder(), Settings(), strategy="magic")


def test_approximate_index_branch_matches_the_exact_one() -> None:
    """Above ``index.exact_max_items`` the content source searches HNSW; on a small
    catalog that search is near exact, so the lists agree with the exact engine's, and
    exclusions (over-fetched past) and deletions still hold."""
    small = Settings().replace(index={"exact_max_items": 10})
    approximate = Engine(HashingEncoder(dim=64), small, strategy="dynamic")
    exact = Engine(HashingEncoder(dim=64), Settings(), strategy="dynamic")
    for engine in (approximate, exact):
        engine.upsert_items(catalog(200))
        engine.learn(clicks("a", [0, 4, 8, 12, 16]))
        engine.delete_items(["i20", "i24"])
    assert approximate.index.approximate and not exact.index.approximate
    excluded = {"a": [f"i{i}" for i in range(28, 120, 4)]}  # 23 more Jazz items left out
    got = {
        name: [i.item_id for i in engine.recommend(["a"], 10, exclude=excluded)["a"]]
        for name, engine in (("approximate", approximate), ("exact", exact))
    }
    assert len(got["approximate"]) == 10
    banned = {"i0", "i4", "i8", "i12", "i16", "i20", "i24", *excluded["a"]}
    assert not set(got["approximate"]) & banned
    assert len(set(got["approximate"]) & set(got["exact"])) >= 8
    assert all(int(i[1:]) % 4 == 0 for i in got["approximate"])  # all Jazz, like the clicks


def test_describe_state_needs_no_engine() -> None:
    engine = engine_with()
    engine.process(
        [*clicks("a", [0, 4, 8]), Event("a", 9.0, "search", "s1", text="jazz records")],
        published_at=50.0,
    )
    blob = engine.export_user("a")
    assert blob is not None
    state = UserState.from_bytes(blob)
    state.user_id = "a"
    plain = describe_state(state, Settings().model)  # what `interest inspect` does
    full = engine.describe_user("a")
    assert full is not None
    assert {k: v for k, v in plain.items() if k != "slots"} == {
        k: v for k, v in full.items() if k != "slots"
    }
    # Without a catalog's label vocabulary the slots keep their weights, not their names.
    assert [s["weight"] for s in plain["slots"]] == [s["weight"] for s in full["slots"]]
    assert all(s["labels"] == [] for s in plain["slots"])
    assert plain["events_by_type"] == {"click": 3, "search": 1}


class CountingEncoder(HashingEncoder):
    """Records the texts of each call."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super().encode(texts)


def test_prepared_texts_leave_the_first_text_batch_its_own_texts_alone() -> None:
    """A worker prepares the label vocabulary and the intent model when its catalog is
    loaded; without that the first batch with a text encodes both (240 ms with the
    default model on a CPU thread), and every event behind it waits."""

    def first_text_batch(prepare: bool) -> tuple[list[list[str]], Any]:
        encoder = CountingEncoder()
        engine = Engine(encoder, Settings())
        engine.upsert_items(catalog(8))
        if prepare:
            engine.prepare_texts()
        encoder.calls.clear()
        events = [Event("u1", 1.0, "search", "e1", text="jazz records")]
        outcome = engine.process(events, published_at=2.0)
        return encoder.calls, [(r.user_id, r.items, r.interests) for r in outcome.recommendations]

    prepared, unprepared = first_text_batch(True), first_text_batch(False)
    assert prepared[0] == [["jazz records"]]
    # unprepared: the query, then the intent prototypes and the label names
    assert unprepared[0][0] == ["jazz records"] and len(unprepared[0]) > 2
    assert prepared[1] == unprepared[1]  # the same recommendations either way


def test_the_cooccurrence_thread_changes_no_recommendation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[runtime] cooccurrence_thread`` hands the co-occurrence updates to a thread (in
    chunks, here of 4 so that many are in flight between the engine's reads): every
    record, score and reason is the engine's without it, batch after batch."""
    from interest_core import cooccurrence

    monkeypatch.setattr(cooccurrence, "_CHUNK", 4)
    rng = np.random.default_rng(3)
    batches = []
    for b in range(12):
        batch = []
        for j in range(40):
            user, item = f"u{rng.integers(8)}", f"i{rng.integers(60)}"
            batch.append(Event(user, b * 100.0 + j, "click", f"e{b}-{j}", item_id=item))
        batches.append(batch)
    outcomes: dict[bool, list[Any]] = {}
    for thread in (False, True):
        engine = Engine(
            HashingEncoder(dim=64),
            Settings().replace(runtime={"cooccurrence_thread": thread}),
            strategy="hybrid",
        )
        engine.upsert_items(catalog(60))
        assert engine.knowledge.cooccurrence.background is thread
        outcomes[thread] = [
            [(r.user_id, r.items, r.interests) for r in engine.process(batch).recommendations]
            for batch in batches
        ]
        assert engine.knowledge.cooccurrence.counts.sum() > 0  # pairs were learned
    assert outcomes[True] == outcomes[False]


def test_only_an_item_of_the_last_ranking_teaches() -> None:
    """A fusion lesson is due when the user acts on one of the candidates of their last
    ranking: not on an item that was no candidate (one they had taken), nor for a user
    without a ranking."""
    engine = engine_with("hybrid")
    shown = engine.process(clicks("u0", [0, 4, 8, 12, 16])).recommendations[0].items

    def row(item_id: str) -> int:
        found = engine.catalog.row(item_id)
        assert found is not None
        return found

    assert engine.ranker.teaches("u0", row(shown[0].item_id))
    assert engine.ranker.teaches("u0", row(shown[-1].item_id))
    assert not engine.ranker.teaches("u0", row("i0"))  # taken before: never a candidate
    assert not engine.ranker.teaches("u1", row(shown[0].item_id))  # no ranking


def test_a_lesson_uses_the_features_the_user_was_ranked_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a user acts on an item of their last ranking, the fusion step judges the
    weights on the features that ranking used (logged with it), not on features read
    again: what other users do in between changes the item knowledge but not the
    lesson, and the lesson reads no co-occurrence table."""
    lessons: dict[str, list[np.ndarray]] = {}
    for run in ("alone", "others_between"):
        engine = engine_with("hybrid")
        learn = engine.ranker.learn
        taught = lessons[run] = []

        def spy(user_id: str, row: int, learn: Any = learn, taught: list[Any] = taught) -> Any:
            step = learn(user_id, row)
            if step is not None:
                taught.append(step.copy())
            return step

        monkeypatch.setattr(engine.ranker, "learn", spy)
        shown = engine.process(clicks("u0", [0, 4, 8, 12, 16])).recommendations[0].items
        if run == "others_between":
            # Other users' events on the shown items move co-occurrence, trending and
            # popularity (Engine.learn: no ranking, so no lesson of theirs)
            picked = [int(i.item_id[1:]) for i in shown[:4]]
            engine.learn(
                [e for u in range(1, 6) for e in clicks(f"u{u}", [0, *picked], start=10.0 * u)]
            )

            def no_reads(*_args: Any, **_kwargs: Any) -> Any:
                raise AssertionError("the lesson read the co-occurrence table")

            monkeypatch.setattr(engine.knowledge.cooccurrence, "sparse_scores", no_reads)
        engine.learn(clicks("u0", [int(shown[1].item_id[1:])], start=100.0))
    assert len(lessons["alone"]) == 1
    np.testing.assert_array_equal(lessons["others_between"][0], lessons["alone"][0])
