"""The two event streams ``interest bench`` runs the pipeline on, and the cached catalog.

- :func:`interaction_stream`: ratings/clicks/views/purchases naming catalog items, no
  free text. Built from MovieLens (``rate`` events on the most-rated movies, in time
  order) when a MovieLens directory is given and readable, else from the synthetic
  generator's log with the text-bearing events (search, chat, review) dropped and any
  text stripped. With the catalog pre-encoded, the worker runs no transformer at all:
  this is the "one worker, CPU, cached catalog" stream of the throughput goal.
- :func:`text_stream`: the synthetic generator's log as it is, searches, chats and
  reviews included; every distinct text goes through the encoder once, so it shows the
  encoder's cost honestly.

The cached catalog is a :class:`~interest_core.encoder.CachedEncoder` with a file store
(``.npz`` written by an earlier run), counting the texts the real model still had to
encode. :func:`catalog_texts_of` finds which texts an Engine encodes
for a catalog (item texts, label names) by running a throwaway Engine once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from interest_core.encoder import Encoder
from interest_core.settings import Settings

__all__ = [
    "DEFAULT_MOVIELENS_DIR",
    "Stream",
    "catalog_texts_of",
    "default_vector_cache_dir",
    "interaction_stream",
    "text_stream",
]

log = logging.getLogger(__name__)

#: Where the shared MovieLens copy lives, relative to the repository root.
DEFAULT_MOVIELENS_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/movielens-small"

_TEXT_TYPES = frozenset({"search", "chat", "review"})


@dataclass
class Stream:
    """One bench stream: a catalog (JSON objects) and event lines (JSON bytes) in time order."""

    name: str
    source: str
    catalog: list[dict[str, Any]]
    lines: list[bytes]
    info: dict[str, Any] = field(default_factory=dict)


def _describe(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    texts = [e["text"] for e in events if e.get("text")]
    return {
        "events_by_type": dict(Counter(str(e["type"]) for e in events)),
        "users": len({str(e["user_id"]) for e in events}),
        "items_touched": len({e["item_id"] for e in events if e.get("item_id")}),
        "events_with_text": len(texts),
        "distinct_texts": len(set(texts)),
    }


def _movielens_events(
    directory: Path, count: int, items: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``rate`` events on the ``items`` most-rated movies, first ``count`` in time order."""
    from producers.movielens import convert_movielens

    with tempfile.TemporaryDirectory(prefix="bench-ml-") as tmp:
        summary = convert_movielens(directory, tmp)
        rates = [
            orjson.loads(line)
            for line in summary.events_path.read_bytes().splitlines()
            if line.strip()
        ]
        catalog = [
            orjson.loads(line)
            for line in summary.catalog_path.read_bytes().splitlines()
            if line.strip()
        ]
    rates = [e for e in rates if e.get("type") == "rate"]
    popular = {item for item, _ in Counter(e["item_id"] for e in rates).most_common(items)}
    chosen = [e for e in rates if e["item_id"] in popular][:count]  # already in time order
    return chosen, [c for c in catalog if c["item_id"] in popular]


def interaction_stream(
    count: int,
    *,
    items: int,
    users: int,
    movielens_dir: str | os.PathLike[str] | None = None,
    seed: int = 3,
) -> Stream:
    """``count`` item-only events (no text) and their catalog of at most ``items`` items.

    MovieLens when ``movielens_dir`` holds a readable dataset (``users`` is then the
    dataset's own), else synthetic with ``users`` users. Raises ``ValueError`` when
    ``count`` or ``items`` is not positive.
    """
    if count <= 0 or items <= 0:
        raise ValueError("count and items must be positive")
    if movielens_dir is not None and Path(movielens_dir).is_dir():
        try:
            events, catalog = _movielens_events(Path(movielens_dir), count, items)
            if events:
                return Stream(
                    "interaction",
                    f"movielens:{movielens_dir}",
                    catalog,
                    [orjson.dumps(e) for e in events],
                    _describe(events),
                )
        except (OSError, ValueError) as exc:
            log.warning("MovieLens at %s unusable (%s); using synthetic events", movielens_dir, exc)
    from producers.synthetic import generate_dataset

    # About one event in five carries text in the generator's mix: ask for enough.
    data = generate_dataset(users=users, items=items, events=int(count * 1.4) + 50, seed=seed)
    kept: list[dict[str, Any]] = []
    for event in data.events:
        if event["type"] in _TEXT_TYPES or event["type"] == "delete_user":
            continue
        kept.append({k: v for k, v in event.items() if k != "text"})
        if len(kept) == count:
            break
    return Stream(
        "interaction",
        "synthetic (text-bearing events dropped, text stripped)",
        list(data.catalog),
        [orjson.dumps(e) for e in kept],
        _describe(kept),
    )


def text_stream(count: int, *, items: int, users: int, seed: int = 3) -> Stream:
    """The synthetic generator's log of ``count`` events (searches, chats, reviews kept)."""
    from producers.synthetic import generate_dataset

    data = generate_dataset(users=users, items=items, events=count, seed=seed)
    return Stream(
        "text",
        "synthetic (generator's log as is)",
        list(data.catalog),
        [orjson.dumps(e) for e in data.events],
        _describe(data.events),
    )


# --------------------------------------------------------------------------- cached catalog


def default_vector_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/interest-stream/bench`` (``~/.cache`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "interest-stream" / "bench"


def catalog_texts_of(
    encoder: Encoder, settings: Settings, catalog: Sequence[dict[str, Any]]
) -> list[str]:
    """Every text an Engine encodes for ``catalog`` before and at its first batch.

    Runs a throwaway Engine through ``encoder``, recording what it is asked:
    ``upsert_items`` on the catalog (item texts), then one
    rating and one search of a made-up user (label names, intent prototypes). The
    search's own text is left out. Returns the texts in the order they were asked.
    """
    from interest_core.engine import Engine
    from interest_core.records import CatalogItem, Event, parse_catalog

    asked: dict[str, None] = {}

    class _Recording:
        name, dim = encoder.name, encoder.dim

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            asked.update(dict.fromkeys(texts))
            return encoder.encode(texts)

    items = [
        parsed
        for parsed in (parse_catalog(None, record) for record in catalog)
        if isinstance(parsed, CatalogItem)
    ]
    if not items:
        return []
    engine = Engine(_Recording(), settings)
    engine.upsert_items(items)
    probe = "bench warm-up probe"
    engine.process(
        [
            Event(
                user_id="bench-warmup",
                ts=1.0,
                type="rate",
                event_id="w1",
                item_id=items[0].item_id,
                rating=5.0,
            ),
            Event(user_id="bench-warmup", ts=2.0, type="search", event_id="w2", text=probe),
        ]
    )
    asked.pop(settings.encoder.query_prefix + probe, None)
    return list(asked)
