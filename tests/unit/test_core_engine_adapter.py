"""The adaptation layer inside the Engine: identity is today's system, swaps need no
migration, malformed versions are refused, and training on co-consumption helps."""

from __future__ import annotations

import numpy as np
import pytest

from interest_core.adapter import AdapterTrainer, AdapterWeights, ExampleBuffer, OnlineAdapter
from interest_core.encoder import HashingEncoder
from interest_core.engine import Engine
from interest_core.interest import RecentItem, UserState
from interest_core.records import CatalogItem, Event
from interest_core.settings import Settings

GENRES = ("Jazz", "Rock", "Sci-Fi", "Drama")
DIM = 64


def catalog(n: int = 40) -> list[CatalogItem]:
    return [
        CatalogItem(f"i{i}", f"{GENRES[i % 4]} title {i}", category=GENRES[i % 4]) for i in range(n)
    ]


def engine_with(
    strategy: str = "hybrid", items: list[CatalogItem] | None = None, *, approximate: bool = False
) -> Engine:
    settings = Settings().replace(index={"exact_max_items": 10}) if approximate else Settings()
    engine = Engine(HashingEncoder(dim=DIM), settings, strategy=strategy)
    engine.upsert_items(items or catalog())
    return engine


def history() -> list[Event]:
    rng = np.random.default_rng(0)
    return [
        Event(f"u{u}", float(j * 10 + u), "click", f"e{u}-{j}", item_id=f"i{rng.integers(40)}")
        for j in range(12)
        for u in range(5)
    ]


def ids(engine: Engine) -> dict[str, list[str]]:
    users = [f"u{u}" for u in range(5)]
    return {u: [i.item_id for i in items] for u, items in engine.recommend(users, 10).items()}


def test_an_untrained_engine_uses_the_raw_space_at_version_0() -> None:
    engine = engine_with()
    assert engine.space.adapter.is_identity
    assert engine.space.version == 0
    assert engine.space.vectors is engine.catalog.embeddings


@pytest.mark.parametrize("approximate", [False, True])
def test_a_layer_that_keeps_directions_gives_the_same_recommendations(approximate: bool) -> None:
    """2 x I goes through every projection (it is not the identity short-cut) and keeps
    every cosine: the lists must be those of the engine without a layer, with the exact
    scan and with the HNSW index (searched through the pulled-back query)."""
    plain, scaled = engine_with(approximate=approximate), engine_with(approximate=approximate)
    assert plain.index.approximate == approximate
    for engine in (plain, scaled):
        engine.learn(history())
    before = ids(plain)
    reason = scaled.set_adapter(
        AdapterWeights(2.0 * np.eye(DIM, dtype=np.float32), scaled.model_name, 1)
    )
    assert reason is None
    assert not scaled.space.adapter.is_identity and scaled.space.version == 1
    assert ids(scaled) == before
    assert np.allclose(scaled.space.vectors[:40], plain.catalog.embeddings[:40], atol=1e-6)


def test_a_swap_migrates_no_state_and_re_projects_new_items() -> None:
    engine = engine_with("dynamic")
    engine.learn(history())
    states = {u: engine.export_user(u) for u in ("u0", "u1")}
    rng = np.random.default_rng(1)
    matrix = np.eye(DIM, dtype=np.float32) + 0.5 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    assert engine.set_adapter(AdapterWeights(matrix, engine.model_name, 3)) is None
    assert {u: engine.export_user(u) for u in ("u0", "u1")} == states
    raw = engine.catalog.embeddings[5]
    expected = matrix @ raw
    assert np.allclose(engine.space.vectors[5], expected / np.linalg.norm(expected), atol=1e-5)
    # An item published after the swap is projected on arrival; a deleted one is gone.
    engine.upsert_items([CatalogItem("new", "Jazz brand new record", category="Jazz")])
    row = engine.catalog.row("new")
    assert row is not None
    expected = matrix @ engine.catalog.embeddings[row]
    assert np.allclose(engine.space.vectors[row], expected / np.linalg.norm(expected), atol=1e-5)
    engine.delete_items(["i5"])
    assert not engine.space.vectors[5].any()
    assert all("i5" not in listed for listed in ids(engine).values())


def test_malformed_versions_are_refused_and_the_last_good_one_stays() -> None:
    engine = engine_with()
    engine.learn(history())
    good = np.eye(DIM, dtype=np.float32) * 1.5
    assert engine.set_adapter(AdapterWeights(good, engine.model_name, 2)) is None
    before = ids(engine)
    nan = good.copy()
    nan[3, 3] = np.nan
    for bad, word in (
        (AdapterWeights(np.eye(DIM + 1, dtype=np.float32), engine.model_name, 3), "shape"),
        (AdapterWeights(nan, engine.model_name, 3), "NaN"),
        (AdapterWeights(good, "some-other-encoder", 3), "encoder"),
    ):
        reason = engine.set_adapter(bad)
        assert reason is not None and word in reason
        assert engine.space.version == 2
    assert ids(engine) == before


def test_examples_are_the_state_before_each_positive_item_event() -> None:
    engine = engine_with("dynamic")
    seen: list[tuple[np.ndarray, int]] = []
    engine.on_example = lambda queries, row: seen.append((queries.copy(), row))
    engine.learn(
        [
            Event("u", 1.0, "click", "a", item_id="i1"),  # no state yet: no example
            Event("u", 2.0, "skip", "b", item_id="i2"),  # negative: no example
            Event("u", 3.0, "click", "c", item_id="i3"),
        ]
    )
    assert len(seen) == 1
    queries, row = seen[0]
    assert row == engine.catalog.row("i3")
    # The state before i3: i1 pulled, i2 pushed away; never i3 itself.
    i3 = engine.catalog.embeddings[row]
    before = engine_with("dynamic")
    before.learn(
        [
            Event("u", 1.0, "click", "a", item_id="i1"),
            Event("u", 2.0, "skip", "b", item_id="i2"),
        ]
    )
    state = before.users["u"]
    assert np.allclose(queries[1], state.long_dir.astype(np.float32))
    assert float(queries[1] @ i3) < 0.99


def _paired_catalog() -> tuple[list[CatalogItem], dict[str, str]]:
    """40 items with unrelated nonsense titles, in 20 pairs always consumed together."""
    rng = np.random.default_rng(3)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    items = [
        CatalogItem(f"p{i}", " ".join("".join(rng.choice(letters, 6)) for _ in range(3)))
        for i in range(40)
    ]
    partner = {f"p{i}": f"p{i ^ 1}" for i in range(40)}
    return items, partner


def _rank_of_partner(engine: Engine, user: str, item: str, partner: str) -> int:
    listed = [i.item_id for i in engine.recommend([user], 40, exclude_seen=False)[user]]
    listed = [i for i in listed if i != item]
    return listed.index(partner) if partner in listed else 40


def test_training_on_co_consumption_brings_the_partner_up() -> None:
    items, partner = _paired_catalog()
    engine = engine_with("dynamic", items)
    online = OnlineAdapter(
        AdapterTrainer(
            DIM, temperature=0.1, learning_rate=0.02, batch_size=64, negatives=16, device="cpu"
        ),
        ExampleBuffer(DIM, 5000),
        encoder=engine.model_name,
        train_every_events=400,
        passes=6.0,
    )
    engine.on_example = online.observe
    rng = np.random.default_rng(4)
    events = []
    for n in range(600):  # each user: one item, then its partner, an hour apart
        first = f"p{rng.integers(40)}"
        user = f"u{n}"
        events.append(Event(user, n * 10.0, "click", f"{user}a", item_id=first))
        events.append(Event(user, n * 10.0 + 3600, "click", f"{user}b", item_id=partner[first]))
    engine.learn(events)
    probes = [(f"probe{i}", f"p{i}") for i in range(0, 40, 3)]
    for user, item in probes:
        engine.learn([Event(user, 1e7, "click", f"{user}-x", item_id=item)])
    before = [_rank_of_partner(engine, u, i, partner[i]) for u, i in probes]
    catalog_ = engine.catalog
    width = catalog_.rows_allocated
    weights = online.train_round(catalog_.embeddings[:width], catalog_.alive[:width])
    assert weights is not None and weights.version == 1
    assert engine.set_adapter(weights) is None
    after = [_rank_of_partner(engine, u, i, partner[i]) for u, i in probes]
    assert np.mean(before) > 5  # unrelated texts: the partner is lost in the list
    assert np.mean(after) < np.mean(before) / 3


def test_every_recommendation_names_the_layer_version() -> None:
    from interest_core.records import parse_recommendation

    engine = engine_with()
    first = engine.process(history()[:10]).recommendations
    assert first and all(r.model_version == 0 for r in first)
    engine.set_adapter(AdapterWeights(1.5 * np.eye(DIM, dtype=np.float32), engine.model_name, 7))
    later = engine.process(history()[10:20]).recommendations
    assert later and all(r.model_version == 7 for r in later)
    back = parse_recommendation(later[0].to_json())
    assert not isinstance(back, type(None)) and getattr(back, "model_version", None) == 7
    old = parse_recommendation(b'{"user_id": "u", "version": 1, "event_ts": 1, "published_at": 2}')
    assert getattr(old, "model_version", "missing") is None


def test_a_swap_projects_off_the_batch_path_and_catches_up_at_commit() -> None:
    """begin -> (batches go on, catalog changes) -> run -> commit: the switch sees the
    catalog as it is at commit, not as it was when the projection began."""
    engine = engine_with("dynamic")
    engine.learn(history())
    rng = np.random.default_rng(2)
    matrix = np.eye(DIM, dtype=np.float32) + 0.4 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    swap = engine.space.begin(AdapterWeights(matrix, engine.model_name, 5))
    assert not isinstance(swap, str)
    assert engine.space.version == 0  # still serving the old layer
    engine.upsert_items([CatalogItem("late", "Rock arrived during the swap", category="Rock")])
    engine.upsert_items([CatalogItem("i7", "Jazz retitled during the swap", category="Jazz")])
    engine.delete_items(["i9"])
    before = ids(engine)
    assert before  # recommending goes on with the old layer meanwhile
    swap.run()
    late = engine.space.commit(swap)
    assert engine.space.version == 5 and late >= 3
    for item in ("late", "i7", "i3"):
        row = engine.catalog.row(item)
        assert row is not None
        expected = matrix @ engine.catalog.embeddings[row]
        assert np.allclose(
            engine.space.vectors[row], expected / np.linalg.norm(expected), atol=1e-5
        )
    assert not engine.space.vectors[9].any()
    refused = engine.space.begin(AdapterWeights(matrix[:5], engine.model_name, 6))
    assert isinstance(refused, str) and "shape" in refused
    with pytest.raises(ValueError):
        pending = engine.space.begin(AdapterWeights(matrix, engine.model_name, 7))
        assert not isinstance(pending, str)
        engine.space.commit(pending)  # not run yet


def _features(engine: Engine, user: str, rows: np.ndarray) -> np.ndarray:
    engine._pending.apply(user)
    view = engine.candidates.view(engine.users[user], engine.candidates.blocked([]), 0)
    return engine.ranker.feature_matrix(view, rows, engine.candidates.trending.dense())


def test_the_hybrid_keeps_raw_content_cosines_and_adds_the_layers_own() -> None:
    """With a layer in use, the hybrid's three content cosines are still the raw ones
    (what new items need) and ``adapted`` is the best cosine in the layer's space; an
    untrained hybrid has no ``adapted`` evidence and gives it no weight; the content
    strategies score in the layer's space."""
    rows = np.arange(40)
    matrix = np.eye(DIM, dtype=np.float32) + 0.6 * np.random.default_rng(4).normal(
        size=(DIM, DIM)
    ).astype(np.float32)
    raw, adapted, dynamic, raw_dynamic = (
        engine_with(),
        engine_with(),
        engine_with("dynamic"),
        engine_with("dynamic"),
    )
    for engine in (raw, adapted, dynamic, raw_dynamic):
        engine.learn(history())
    untrained = _features(raw, "u1", rows)
    assert not untrained[:, 6].any()
    assert raw.fusion_weights()["adapted"] == 0.0
    for engine in (adapted, dynamic):
        assert engine.set_adapter(AdapterWeights(matrix, engine.model_name, 2)) is None
    layered = _features(adapted, "u1", rows)
    assert np.allclose(layered[:, :6], untrained[:, :6])  # raw cosines and the rest
    state = adapted.users["u1"]
    items = adapted.space.vectors[rows]
    queries = adapted.space.adapter.project_queries(
        np.vstack([state.slot_dirs.astype(np.float32), state.long_dir[None, :]])
    )
    best_slot_or_long = (items @ queries.T).max(axis=1)
    assert np.all(layered[:, 6] >= best_slot_or_long - 1e-5)
    assert np.abs(layered[:, 6] - untrained[:, :3].max(axis=1)).max() > 0.05
    # dynamic: its content cosines are the layer's (no separate feature)
    assert not np.allclose(
        _features(dynamic, "u1", rows)[:, :3], _features(raw_dynamic, "u1", rows)[:, :3]
    )


def _warm_and_new(
    cold_slots: int, strategy: str = "hybrid", cold_taste: float = 0.0
) -> tuple[Engine, set[str]]:
    """30 users who all take from ten 'Jazz' items (warm: about 18 events each), and
    ten new 'Jazz' items nobody has taken yet; places for new items fixed at
    ``cold_slots`` unless ``cold_taste`` > 0."""
    items = [CatalogItem(f"w{i}", f"Jazz standards volume {i}", category="Jazz") for i in range(10)]
    new = [
        CatalogItem(f"n{i}", f"Jazz standards new volume {i}", category="Jazz") for i in range(10)
    ]
    settings = Settings().replace(recommend={"cold_slots": cold_slots, "cold_taste": cold_taste})
    engine = Engine(HashingEncoder(dim=DIM), settings, strategy=strategy)
    engine.upsert_items(items + new)
    rng = np.random.default_rng(9)
    events = [
        Event(f"u{u}", float(j * 40 + u), "click", f"e{u}-{j}", item_id=f"w{i}")
        for u in range(30)
        for j, i in enumerate(rng.choice(10, size=6, replace=False))
    ]
    engine.learn(events)
    return engine, {item.item_id for item in new}


def test_new_items_get_the_cold_places_of_a_hybrid_list() -> None:
    users = [f"u{u}" for u in range(30)]
    lists = {}
    for slots in (0, 2):
        engine, new = _warm_and_new(slots)
        lists[slots] = {
            user: [item.item_id for item in listed]
            for user, listed in engine.recommend(users, 3).items()
        }
    plain = [sum(i in new for i in listed) for listed in lists[0].values()]
    kept = [sum(i in new for i in listed) for listed in lists[2].values()]
    assert sum(plain) < 30  # warm items win the plain ranking
    assert kept == [2] * 30  # two of three places for the best new matches
    for user, listed in lists[2].items():
        assert listed[0] == lists[0][user][0]  # the best warm item keeps first place
        assert all(i in new for i in listed[1:])  # new items take the lowest places


def test_cold_places_are_the_hybrids_alone() -> None:
    """Content-only and co-occurrence-only lists rank every item by one kind of evidence
    already: they get no reserved places."""
    users = [f"u{u}" for u in range(30)]
    for strategy in ("dynamic", "itemknn"):
        lists = [
            {u: [i.item_id for i in listed] for u, listed in engine.recommend(users, 3).items()}
            for engine, _ in (_warm_and_new(0, strategy), _warm_and_new(2, strategy))
        ]
        assert lists[0] == lists[1]
        assert _warm_and_new(2, strategy)[0].ranker.cold_slots == 0


def test_a_users_history_says_how_new_each_item_was_when_taken() -> None:
    """Each positive event's history entry holds the item's positive events before it,
    the same event batch included (the co-occurrence table's queued adds count)."""
    engine, _ = _warm_and_new(2)
    engine.learn([Event(f"v{u}", 1000.0 + u, "click", f"f{u}", item_id="n0") for u in range(4)])
    engine.learn([Event("v9", 2000.0, "skip", "f9", item_id="n1")])
    assert [engine.users[f"v{u}"].recent[-1].before for u in range(4)] == [0, 1, 2, 3]
    assert engine.users["v9"].recent[-1].before == 0  # a skip is no positive event


def test_places_for_new_items_follow_the_users_taste_for_them() -> None:
    """With ``cold_taste``, a user who took new items gets more of the list's places for
    new items, one who never did gets none, one with no such history the prior's share;
    without it every user gets ``cold_slots``."""
    engine, _ = _warm_and_new(2, cold_taste=1.0)
    ranker = engine.ranker

    def user(befores: list[int]) -> UserState:
        state = UserState("x", DIM)
        for n, before in enumerate(befores):
            state.remember_item(RecentItem(f"i{n}", float(n), 1.0, "clicked", before), 50, 100)
        return state

    explorer, settled = user([0, 1, 4, 2, 0, 3, 1, 0]), user([9, 50, 120, 7, 5, 30, 11, 8])
    assert ranker.cold_places(explorer, 10) == 8  # (8 + 2 x 0.2) / (8 + 2) of 10
    assert ranker.cold_places(settled, 10) == 0
    assert ranker.cold_places(None, 10) == 2 == ranker.cold_places(user([-1, -1]), 10)
    assert ranker.cold_places(user([0, 50, 60]), 10) == 3  # (1 + 0.4) / (3 + 2) of 10
    fixed = _warm_and_new(2, cold_taste=0.0)[0].ranker
    assert fixed.cold_places(explorer, 10) == fixed.cold_places(settled, 10) == 2


def test_the_hybrid_weighs_co_occurrence_without_the_candidates_popularity_discount() -> None:
    """``cooccurrence_popular`` is the co-occurrence cosine times sqrt(n_j) of each
    candidate; only the hybrid has it, and it explains an item as co-occurrence does."""
    rows = np.arange(20)
    hybrid, _ = _warm_and_new(2)
    features = _features(hybrid, "u1", rows)
    counts = hybrid.knowledge.cooccurrence.counts[rows]
    assert np.allclose(features[:, 7], features[:, 3] * np.sqrt(np.maximum(counts, 1.0)))
    assert (features[:10, 7] > features[:10, 3]).any()  # warm items: n_j > 1
    knn, _ = _warm_and_new(2, "itemknn")
    assert not _features(knn, "u1", rows)[:, 7].any()
    view = hybrid.candidates.view(hybrid.users["u1"], hybrid.candidates.blocked([]), 0)
    row = int(np.argmax(features[:, 7]))
    # The feature whose contribution is largest: cooccurrence_popular (index 7).
    explained = hybrid.ranker.reason(view, row, 1.0, 7)
    assert explained == hybrid.candidates.cooccurrence.reasons(view, [row])[0]
