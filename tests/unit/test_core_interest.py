"""User state: slots, idempotence, serialisation, size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.encoder import HashingEncoder
from interest_core.engine import Engine
from interest_core.interest import InterestModel, RecentItem, StateFormatError, UserState
from interest_core.records import CatalogItem, Event
from interest_core.settings import ModelSettings, Settings


def axis(i: int, dim: int = 8) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[i] = 1.0
    return vector


def test_two_distant_tastes_make_two_slots() -> None:
    model = InterestModel(ModelSettings(max_slots=4, slot_similarity=0.55))
    state = UserState("u", 8)
    jazz = axis(0) + 0.1 * axis(2)
    space = axis(1) + 0.1 * axis(3)
    for t in range(5):
        model.apply(state, jazz / np.linalg.norm(jazz), 1.0, ts=float(t))
        model.apply(state, space / np.linalg.norm(space), 1.0, ts=float(t) + 0.5)
    assert len(state.slot_weights) == 2
    dirs = state.slot_dirs.astype(np.float32)
    best = sorted(int(np.argmax(np.abs(d))) for d in dirs)
    assert best == [0, 1]  # one slot per taste, not one averaged slot
    # The averaged long-term vector sits between them.
    long_dir = state.long_dir.astype(np.float32)
    assert abs(long_dir[0] - long_dir[1]) < 0.05


def test_full_slots_replace_the_weakest() -> None:
    model = InterestModel(ModelSettings(max_slots=2, slot_similarity=0.9))
    state = UserState("u", 8)
    model.apply(state, axis(0), 3.0, ts=0.0)
    model.apply(state, axis(1), 1.0, ts=0.0)
    model.apply(state, axis(2), 2.0, ts=0.0)
    kept = {int(np.argmax(d.astype(np.float32))) for d in state.slot_dirs}
    assert kept == {0, 2}


def test_negative_feedback_weakens_the_matching_slot() -> None:
    model = InterestModel(ModelSettings(slot_similarity=0.5))
    state = UserState("u", 8)
    model.apply(state, axis(0), 1.0, ts=0.0)
    model.apply(state, axis(1), 1.0, ts=0.0)
    model.apply(state, axis(0), -1.0, ts=1.0)
    assert len(state.slot_weights) == 1
    assert int(np.argmax(state.slot_dirs[0].astype(np.float32))) == 1


def small_engine(strategy: str = "hybrid") -> Engine:
    engine = Engine(HashingEncoder(dim=64), Settings(), strategy=strategy)
    engine.upsert_items(
        [
            CatalogItem(f"i{n}", f"title {n}", category=f"c{n % 3}", tags=(f"t{n % 5}",))
            for n in range(30)
        ]
    )
    return engine


def test_same_event_twice_changes_nothing() -> None:
    engine = small_engine()
    events = [
        Event("u", 10.0, "click", "e1", item_id="i1", offset=5),
        Event("u", 11.0, "search", "e2", text="title 3 please", offset=6),
        Event("u", 12.0, "rate", "e3", item_id="i2", rating=4.5, offset=7),
    ]
    engine.learn(events)
    before = engine.export_user("u")
    engine.learn(events)  # replayed by offset
    engine.learn([Event("u", 12.0, "rate", "e3", item_id="i2", rating=4.5)])  # by event id
    assert engine.export_user("u") == before
    outcome = engine.process(events)
    assert outcome.duplicates == 3 and not outcome.recommendations
    assert engine.export_user("u") == before


@st.composite
def event_lists(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        kind = draw(
            st.sampled_from(["click", "view", "rate", "skip", "search", "purchase", "review"])
        )
        item = f"i{draw(st.integers(0, 29))}"
        out.append(
            Event(
                "u",
                float(draw(st.integers(0, 10**7))),
                kind,
                f"e{i}",
                item_id=None if kind == "search" else item,
                text="a query about title" if kind in ("search", "review") else None,
                rating=draw(st.floats(0, 5)) if kind == "rate" else None,
            )
        )
    return out


@settings(max_examples=30, deadline=None)
@given(event_lists())
def test_serialisation_round_trip(events: list[Event]) -> None:
    engine = small_engine()
    engine.learn(events)
    blob = engine.export_user("u")
    assert blob is not None
    other = small_engine()
    other.import_user("u", blob)
    assert other.export_user("u") == blob
    assert other.describe_user("u") == engine.describe_user("u")
    assert other.recommend(["u"], 5) == engine.recommend(["u"], 5)


def test_corrupt_state_is_rejected() -> None:
    engine = small_engine()
    with pytest.raises(StateFormatError):
        engine.import_user("u", b"garbage")
    blob = UserState("u", 32).to_bytes()
    with pytest.raises(StateFormatError, match="width"):
        engine.import_user("u", blob)


def test_bytes_per_user_with_the_real_width() -> None:
    """Measured: a full user (384-dim vectors, 4 slots, 3 texts, 50 recent items, 64
    event ids, 1000 seen items) exports to 20,043 bytes; with 50 seen items 10,543 bytes.
    The float16 vectors are 9 x 384 x 2 = 6,912 bytes of it, the rest is ids."""
    model = InterestModel(ModelSettings())
    state = UserState("user-000001", 384)
    rng = np.random.default_rng(0)
    for i in range(1000):
        vector = rng.normal(size=384).astype(np.float32)
        model.apply(state, vector / np.linalg.norm(vector), 1.0, ts=float(i))
        item = RecentItem(f"m{100000 + i}", float(i), 1.0, "rated 4.5", before=i % 300)
        state.remember_item(item, 50, 1000)
        state.mark_applied(f"ratings-{i}", None, "rate", float(i))
    for i in range(3):
        state.remember_text(f"a search text number {i}", np.ones(384, np.float32) / 384**0.5, 1.0)
    size = len(state.to_bytes())
    assert 19_000 < size < 21_000
    state.seen = dict(list(state.seen.items())[-50:])
    assert 9_500 < len(state.to_bytes()) < 11_000


def _with_meta(blob: bytes, **changes: object) -> bytes:
    """``blob`` (a state) with its JSON metadata's keys changed (None: removed)."""
    import orjson

    from interest_core.interest import _HEADER

    magic, body_len, dim = _HEADER.unpack_from(blob)
    meta = orjson.loads(blob[_HEADER.size : _HEADER.size + body_len])
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    body = orjson.dumps(meta)
    return _HEADER.pack(magic, len(body), dim) + body + blob[_HEADER.size + body_len :]


def test_a_history_entry_keeps_how_new_its_item_was() -> None:
    """Each history entry keeps the item's positive events before it (the user's taste
    for new items is read from them), beside the four fields a reader of the previous
    version unpacks; a state written before they were kept loads with -1 (unknown) for
    each; counts that do not match the history are refused."""
    import orjson

    from interest_core.interest import _HEADER

    state = UserState("u", 8)
    state.remember_item(RecentItem("a", 1.0, 1.0, "clicked", before=3), 50, 100)
    state.remember_item(RecentItem("b", 2.0, -1.0, "skipped"), 50, 100)
    blob = state.to_bytes()
    back = UserState.from_bytes(blob)
    assert [(r.item_id, r.weight, r.before) for r in back.recent] == [
        ("a", 1.0, 3),
        ("b", -1.0, -1),
    ]
    _, body_len, _ = _HEADER.unpack_from(blob)
    meta = orjson.loads(blob[_HEADER.size : _HEADER.size + body_len])
    assert all(len(entry) == 4 for entry in meta["r"])  # what the previous version reads
    older = UserState.from_bytes(_with_meta(blob, rb=None))
    assert [(r.item_id, r.before) for r in older.recent] == [("a", -1), ("b", -1)]
    for bad in ([3], [3, 1, 2], ["3", 1], [2.5, 1], [True, 1], "3"):
        with pytest.raises(StateFormatError, match="history counts"):
            UserState.from_bytes(_with_meta(blob, rb=bad))
    with pytest.raises(StateFormatError):
        UserState.from_bytes(_with_meta(blob, r=[["a", 1.0, 1.0], ["b", 2.0, -1.0]]))
