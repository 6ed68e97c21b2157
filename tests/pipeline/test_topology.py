"""The deployed topology offline: engines that share item knowledge through the fold
recommend as one process does (exactly, without lag), and a lag only delays other
engines' events, never a worker's own."""

from __future__ import annotations

import pytest

from consumers.state_store import partition_for_key
from interest_core.encoder import CachedEncoder, HashingEncoder
from interest_core.engine import FEATURES, INITIAL_FUSION, Engine
from interest_core.evaluation import prequential
from interest_core.item_knowledge import KnowledgeFold
from interest_core.records import CatalogItem, Event, parse_catalog, parse_event
from interest_core.settings import Settings
from interest_core.shared_fusion import SharedFusion
from interest_core.topology import FleetRecommender
from producers.synthetic import generate_dataset

SETTINGS = Settings()


@pytest.fixture(scope="module")
def data() -> tuple[list[CatalogItem], list[Event]]:
    generated = generate_dataset(users=60, items=150, events=2500, seed=4)
    items = [parse_catalog(None, row) for row in generated.catalog]
    events = [parse_event(row) for row in generated.events]
    assert all(isinstance(i, CatalogItem) for i in items)
    assert all(isinstance(e, Event) for e in events)
    return items, events  # type: ignore[return-value]


class _One:
    """One engine behind the protocol (what `interest eval` runs with --workers 1)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def learn(self, events):  # type: ignore[no-untyped-def]
        self.engine.learn(events)

    def recommend(self, user_ids, k, exclude):  # type: ignore[no-untyped-def]
        answers = self.engine.recommend(list(user_ids), k, exclude=exclude)
        return {u: [i.item_id for i in listed] for u, listed in answers.items()}


def _engine(items: list[CatalogItem], strategy: str, *, emit: bool) -> Engine:
    engine = Engine(
        CachedEncoder(HashingEncoder(dim=64)), SETTINGS, strategy=strategy, emit_item_signals=emit
    )
    engine.upsert_items(items)
    return engine


def _fleet(items, strategy: str, workers: int, lag: int, publish_every: int | None = None):  # type: ignore[no-untyped-def]
    return FleetRecommender(
        [_engine(items, strategy, emit=True) for _ in range(workers)],
        lambda user: partition_for_key(user.encode(), workers),
        KnowledgeFold(
            max_neighbours=200,
            trending_half_life_s=SETTINGS.recommend.trending_half_life_s,
            popularity_half_life_s=SETTINGS.model.long_term_half_life_s,
        ),
        fusion=SharedFusion(
            FEATURES,
            learning_rate=SETTINGS.recommend.fusion_learning_rate,
            initial=INITIAL_FUSION,
        ),
        lag_events=lag,
        publish_every=publish_every,
    )


def _ranks(recommender, items, events) -> list[int]:  # type: ignore[no-untyped-def]
    result = prequential(events, recommender, catalog={i.item_id for i in items}, k=10)
    assert result.evaluated > 300
    return result.ranks


def test_four_engines_without_lag_rank_as_one_process(data) -> None:  # type: ignore[no-untyped-def]
    """itemknn has no fusion to learn: with knowledge published after every event, four
    engines see exactly the co-occurrence one process sees."""
    items, events = data
    one = _ranks(_One(_engine(items, "itemknn", emit=False)), items, events)
    fleet = _fleet(items, "itemknn", 4, lag=0, publish_every=1)
    four = _ranks(fleet, items, events)
    assert min(fleet.routed) > 0  # every engine had users
    assert four == one


def test_one_engine_through_the_stage_with_lag_ranks_as_one_process(data) -> None:  # type: ignore[no-untyped-def]
    """A worker sees its own events at once (the journal on top of lagging records), so a
    fleet of one ranks as one process, fusion learning included, whatever the lag."""
    items, events = data
    one = _ranks(_One(_engine(items, "hybrid", emit=False)), items, events)
    fleet = _fleet(items, "hybrid", 1, lag=300)
    lagged = _ranks(fleet, items, events)
    assert fleet.publications > 3 and fleet.records_published > 0
    assert lagged == one


def test_lag_delays_other_engines_knowledge(data) -> None:  # type: ignore[no-untyped-def]
    """Without sharing (a lag beyond the log) four itemknn engines know less than with
    it; a realistic lag loses little."""
    items, events = data
    shared = _ranks(_fleet(items, "itemknn", 4, lag=50), items, events)
    isolated = _ranks(_fleet(items, "itemknn", 4, lag=10**9), items, events)

    def ndcg(ranks: list[int]) -> float:
        import math

        return sum(1 / math.log2(r + 1) for r in ranks if r) / len(ranks)

    assert ndcg(shared) > 1.1 * ndcg(isolated)
