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

:class:`StoredVectors` is the cached catalog: an encoder that answers texts it already
holds (read from an ``.npz`` file written by an earlier run) and sends the rest to the
real model, counting them. :func:`catalog_texts_of` finds which texts an Engine encodes
for a catalog (item texts, label names) by running a throwaway Engine once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
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
    "StoredVectors",
    "Stream",
    "catalog_texts_of",
    "default_vector_cache_dir",
    "interaction_stream",
    "text_stream",
]

log = logging.getLogger(__name__)

#: Where the shared MovieLens copy lives, relative to the repository root.
DEFAULT_MOVIELENS_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/movielens-small"

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


class StoredVectors:
    """An encoder that answers from stored vectors and sends unknown texts to ``inner``.

    ``model_texts`` counts the texts ``inner`` (the real model) had to encode since the
    last :meth:`reset_counts` (``encoded`` holds them, ``model_seconds`` the time spent).
    """

    def __init__(self, inner: Encoder, path: Path | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.path = path
        self.model_texts = 0
        self.model_seconds = 0.0
        self.encoded: set[str] = set()  # texts the model encoded since the last reset
        self._vectors: dict[str, np.ndarray] = {}
        self.loaded = 0
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    texts, matrix = stored["texts"].tolist(), stored["vectors"]
                if matrix.shape == (len(texts), self.dim):
                    self._vectors = dict(zip(texts, matrix.astype(np.float32), strict=True))
                    self.loaded = len(texts)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("vector cache %s unreadable (%s); starting empty", path, exc)

    @staticmethod
    def file_for(directory: Path, encoder: Encoder) -> Path:
        """The cache file of ``encoder`` (its name and width) under ``directory``."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(encoder.name))[:80] or "encoder"
        tag = hashlib.sha1(f"{encoder.name}|{encoder.dim}".encode()).hexdigest()[:8]
        return directory / f"{safe}-{encoder.dim}-{tag}.npz"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows for ``texts`` (float32, unit norm); only unknown texts reach the model."""
        import time

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        unknown = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if unknown:
            started = time.perf_counter()
            matrix = np.asarray(self.inner.encode(unknown), dtype=np.float32)
            self.model_seconds += time.perf_counter() - started
            self.model_texts += len(unknown)
            self.encoded.update(unknown)
            self._vectors.update(zip(unknown, matrix, strict=True))
        for row, text in enumerate(texts):
            out[row] = self._vectors[text]
        return out

    def reset_counts(self) -> None:
        """Start counting the model's texts and time afresh."""
        self.model_texts = 0
        self.model_seconds = 0.0
        self.encoded.clear()

    def save(self, texts: Sequence[str]) -> None:
        """Write the vectors of ``texts`` (all known) to :attr:`path`, merged with what it held."""
        if self.path is None:
            return
        keep = dict.fromkeys(texts)
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as stored:
                    keep.update(dict.fromkeys(stored["texts"].tolist()))
            except (OSError, ValueError, KeyError):
                pass
        names = [t for t in keep if t in self._vectors]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            texts=np.asarray(names, dtype=str),
            vectors=np.stack([self._vectors[t] for t in names]).astype(np.float32)
            if names
            else np.zeros((0, self.dim), dtype=np.float32),
        )
        tmp.replace(self.path)


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
