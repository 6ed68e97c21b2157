"""The bench's two streams, its cached catalog and the soak rate choice (no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from consumers.harness.bench import soak_rate
from consumers.harness.bench_streams import (
    DEFAULT_MOVIELENS_DIR,
    catalog_texts_of,
    interaction_stream,
    text_stream,
)
from interest_core.catalog import item_text
from interest_core.encoder import CachedEncoder, HashingEncoder
from interest_core.records import CatalogItem, parse_catalog
from interest_core.settings import Settings

TEXT_TYPES = {"search", "chat", "review"}


def _events(stream):  # type: ignore[no-untyped-def]
    return [orjson.loads(line) for line in stream.lines]


def test_synthetic_interaction_stream_has_no_text() -> None:
    stream = interaction_stream(400, items=60, users=40, movielens_dir=None)
    events = _events(stream)
    assert len(events) == 400
    assert not any("text" in e for e in events)
    assert not {e["type"] for e in events} & TEXT_TYPES
    catalog_ids = {c["item_id"] for c in stream.catalog}
    assert all(e["item_id"] in catalog_ids for e in events)
    assert stream.info["distinct_texts"] == 0
    assert stream.source.startswith("synthetic")


@pytest.mark.skipif(not DEFAULT_MOVIELENS_DIR.is_dir(), reason="no MovieLens copy")
def test_movielens_interaction_stream_is_rates_on_the_most_rated_movies() -> None:
    stream = interaction_stream(500, items=50, users=0, movielens_dir=DEFAULT_MOVIELENS_DIR)
    events = _events(stream)
    assert stream.source.startswith("movielens:")
    assert len(events) == 500
    assert {e["type"] for e in events} == {"rate"}
    assert len(stream.catalog) == 50
    catalog_ids = {c["item_id"] for c in stream.catalog}
    assert {e["item_id"] for e in events} <= catalog_ids
    times = [e["ts"] for e in events]
    assert times == sorted(times)


def test_missing_movielens_falls_back_to_synthetic(tmp_path: Path) -> None:
    stream = interaction_stream(50, items=20, users=10, movielens_dir=tmp_path / "absent")
    assert stream.source.startswith("synthetic")
    with pytest.raises(ValueError):
        interaction_stream(0, items=20, users=10)


def test_text_stream_keeps_the_searches_and_chats() -> None:
    stream = text_stream(600, items=60, users=40)
    events = _events(stream)
    assert len(events) == 600
    assert {"search", "chat"} <= {e["type"] for e in events}
    assert stream.info["distinct_texts"] > 0


def test_cached_encoder_store_answers_known_texts_and_persists(tmp_path: Path) -> None:
    inner = HashingEncoder(dim=64)
    path = CachedEncoder.store_for(tmp_path, inner)
    first = CachedEncoder(inner, None, store=path)
    vectors = first.encode(["red shoes", "blue hat", "red shoes"])
    assert first.texts_encoded == 2 and first.calls == 1
    np.testing.assert_allclose(vectors, inner.encode(["red shoes", "blue hat", "red shoes"]))
    first.save(["red shoes"])
    second = CachedEncoder(inner, None, store=path)
    assert second.loaded_texts == {"red shoes"}
    second.encode(["red shoes"])
    assert second.texts_encoded == 0
    second.encode(["red shoes", "green scarf"])
    assert second.texts_encoded == 1 and "green scarf" in second
    second.reset_counts()
    assert second.texts_encoded == 0 and second.calls == 0 and second.encode_s == 0.0


def test_unreadable_vector_store_starts_empty(tmp_path: Path) -> None:
    inner = HashingEncoder(dim=32)
    path = CachedEncoder.store_for(tmp_path, inner)
    path.write_bytes(b"not an npz file")
    stored = CachedEncoder(inner, None, store=path)
    assert not stored.loaded_texts and len(stored) == 0
    stored.encode(["x"])
    assert stored.texts_encoded == 1


def test_catalog_texts_cover_every_item_text_and_not_the_probe() -> None:
    stream = text_stream(50, items=30, users=5)
    texts = catalog_texts_of(HashingEncoder(dim=64), Settings(), stream.catalog)
    items = [p for p in (parse_catalog(None, c) for c in stream.catalog)]
    assert all(isinstance(p, CatalogItem) for p in items)
    assert {item_text(p) for p in items if isinstance(p, CatalogItem)} <= set(texts)
    assert "bench warm-up probe" not in texts


def test_soak_rate_prefers_explicit_then_previous_then_measured() -> None:
    pipeline = {"streams": {"interaction": {"worker_events_per_s": 900.0}, "text": {"error": "x"}}}
    assert soak_rate(50.0, 400.0, pipeline)[0] == 50.0
    assert soak_rate(None, 400.0, pipeline)[0] == 200.0
    assert soak_rate(None, None, pipeline)[0] == 450.0
    pipeline["streams"]["text"] = {"worker_events_per_s": 100.0}
    rate, why = soak_rate(None, None, pipeline)
    assert rate == 50.0 and "text" in why
    assert soak_rate(None, None, None)[0] is None
