"""What a worker does before its first event: the catalog, and what its texts need."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry

from consumers.testing import catalog_records
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings


class CatalogFeed:
    """A catalog follower with one poll's worth of records."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.caught_up = False

    def poll(self, timeout_s: float = 0.0) -> list[Any]:
        records, self.records = self.records, []
        self.caught_up = True
        return records


def test_a_loaded_catalog_leaves_the_first_text_batch_only_its_own_texts() -> None:
    settings = Settings().replace(encoder={"backend": "hashing"})
    worker = Worker(settings, HashingEncoder(), worker_id="t", registry=CollectorRegistry())
    items = [
        {"item_id": f"i{i}", "title": f"title {i}", "category": ("Jazz", "Rock")[i % 2]}
        for i in range(6)
    ]
    feed = CatalogFeed(catalog_records(settings.topics.catalog, items))
    worker._load_catalog(feed, threading.Event())
    engine = worker.engine
    assert engine.catalog_size == 6
    # The label vocabulary and the intent model are encoded (not in the first batch
    # with a text: 240 ms of it with the default model on a CPU thread).
    assert engine.vocabulary.names == ["Jazz", "Rock"]
    assert engine.texts._intent is not None
