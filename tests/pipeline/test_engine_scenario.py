"""Records in, recommendations out, through Engine.process (the worker's call)."""

from __future__ import annotations

from collections import Counter

import pytest

from interest_core.encoder import CachedEncoder, HashingEncoder
from interest_core.engine import Engine
from interest_core.records import CatalogItem, Event, parse_event
from interest_core.settings import Settings

WORDS = {
    "Jazz": ("saxophone", "bebop", "trumpet", "swing", "blue", "note"),
    "Sci-Fi": ("spaceship", "galaxy", "robot", "alien", "planet", "laser"),
    "Cooking": ("recipe", "pasta", "oven", "spice", "bread", "soup"),
    "Garden": ("tulip", "soil", "seed", "rose", "hedge", "compost"),
}


def catalog() -> list[CatalogItem]:
    items = []
    for genre, words in WORDS.items():
        for i in range(30):
            title = f"{words[i % 6]} {words[(i + 2) % 6]} {i}"
            items.append(
                CatalogItem(f"{genre[:2].lower()}{i}", title, category=genre, tags=(words[i % 6],))
            )
    return items


def category_share(engine: Engine, items: list[str], genre: str) -> float:
    genres = Counter(engine.catalog.labels[engine.catalog.row_of[i]][0] for i in items)
    return genres[genre] / max(len(items), 1)


@pytest.mark.parametrize("strategy", ["dynamic", "hybrid"])
def test_recommendations_follow_a_change_of_taste(strategy: str) -> None:
    settings = Settings()
    results = {}
    for name in (strategy, "static"):
        engine = Engine(CachedEncoder(HashingEncoder(dim=256)), settings, strategy=name)
        engine.upsert_items(catalog())
        hour = 3600.0
        old = [
            Event("u", i * hour, "click", f"j{i}", item_id=f"ja{i}") for i in range(15)
        ]  # 15 jazz items stay unseen
        engine.process(old)
        start = 27 * hour
        new = [Event("u", start + 60.0 * i, "click", f"s{i}", item_id=f"sc{i}") for i in range(3)]
        outcome = engine.process(new)
        items = [i.item_id for i in outcome.recommendations[0].items]
        results[name] = category_share(engine, items, "Sci-Fi")
    assert results[strategy] >= 0.6, results  # follows within three events
    assert results["static"] <= 0.3, results  # the static profile stays on jazz


def test_raw_records_through_process() -> None:
    engine = Engine(HashingEncoder(dim=128), Settings(), strategy="hybrid")
    engine.upsert_items(catalog())
    raw = [
        b'{"user_id": "u1", "ts": 10, "type": "click", "item_id": "ja1", "event_id": "a"}',
        b'{"user_id": "u1", "ts": 11, "type": "search", "text": "robot spaceship, call +1 555 123 4567"}',
        b'{"user_id": 7, "ts": "2024-01-01T00:00:00Z", "type": "rate", "item_id": "sc2", "rating": 5}',
    ]
    events = []
    for offset, record in enumerate(raw):
        parsed = parse_event(record, fallback_id=f"t/0/{offset}", offset=offset)
        assert isinstance(parsed, Event)
        events.append(parsed)
    outcome = engine.process(events, published_at=1.0)
    assert {r.user_id for r in outcome.recommendations} == {"u1", "7"}
    u1 = next(r for r in outcome.recommendations if r.user_id == "u1")
    assert u1.trigger_event_id == "t/0/1"
    assert outcome.stats.texts_encoded == 0  # not a CachedEncoder: no counters
    state = engine.describe_user("u1")
    assert state is not None and state["recent_texts"] == ["robot spaceship, call [phone]"]
    assert any("search" in i.reason for i in u1.items)
    # The same batch again (a redelivery after a crash) changes nothing.
    before = engine.export_user("u1")
    again = engine.process(events, published_at=2.0)
    assert again.duplicates == 3 and not again.recommendations
    assert engine.export_user("u1") == before
