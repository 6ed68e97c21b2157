"""The catalog held by one engine: item ids, their text, labels and embeddings.

Each live item owns a row (an integer) in a growable float32 embedding matrix; rows are
never reused, so a deleted item's row stays dead and every per-row structure
(co-occurrence, trending, index) can purge it once and for all. An item whose text did
not change is not re-encoded on re-upsert.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest_core.records import CatalogItem

__all__ = ["Catalog", "item_labels", "item_text"]


def item_text(item: CatalogItem) -> str:
    """The one text the encoder reads for an item: title, category, tags, description,
    image caption, joined with '. ' (empty fields skipped)."""
    parts = [item.title, item.category, ", ".join(t for t in item.tags if t)]
    parts += [item.description, item.image_caption]
    return ". ".join(p.strip() for p in parts if p and p.strip())


def item_labels(item: CatalogItem) -> tuple[str, ...]:
    """Readable interest labels of an item: its category, then its tags (deduplicated)."""
    seen: dict[str, None] = {}
    for label in (item.category, *item.tags):
        label = label.strip()
        if label and label not in seen:
            seen[label] = None
    return tuple(seen)


class Catalog:
    """Rows, texts, labels and unit embeddings of the live items."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.embeddings = np.zeros((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.row_of: dict[str, int] = {}
        self.item_ids: list[str] = []
        self.titles: list[str] = []
        self.texts: list[str] = []
        self.labels: list[tuple[str, ...]] = []
        #: Counts the changes of which ids have rows (an item added or removed).
        self.layout = 0

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def rows_allocated(self) -> int:
        """Rows handed out so far, dead ones included (the width of per-row arrays)."""
        return len(self.item_ids)

    def row(self, item_id: str) -> int | None:
        """The live row of ``item_id``, or None."""
        return self.row_of.get(item_id)

    def changed(self, items: Sequence[CatalogItem]) -> list[tuple[CatalogItem, str]]:
        """The items (with their text) that are new or whose text or labels changed."""
        out: list[tuple[CatalogItem, str]] = []
        for item in items:
            text = item_text(item)
            row = self.row_of.get(item.item_id)
            if row is None or self.texts[row] != text or self.labels[row] != item_labels(item):
                out.append((item, text))
        return out

    def put(self, item: CatalogItem, text: str, vector: np.ndarray | None) -> tuple[int, bool]:
        """Store an item; returns ``(row, text_changed)``. ``vector`` None keeps the old one."""
        row = self.row_of.get(item.item_id)
        if row is None:
            row = len(self.item_ids)
            self._grow(row + 1)
            self.row_of[item.item_id] = row
            self.item_ids.append(item.item_id)
            self.titles.append(item.title)
            self.texts.append("")
            self.labels.append(())
            self.alive[row] = True
            self.layout += 1
        text_changed = self.texts[row] != text
        self.titles[row] = item.title
        self.texts[row] = text
        self.labels[row] = item_labels(item)
        if vector is not None:
            self.embeddings[row] = vector
        return row, text_changed

    def remove(self, item_id: str) -> int | None:
        """Forget ``item_id``; returns its (now dead) row, or None when it was not held."""
        row = self.row_of.pop(item_id, None)
        if row is not None:
            self.alive[row] = False
            self.embeddings[row] = 0.0
            self.layout += 1
        return row

    def _grow(self, needed: int) -> None:
        if needed <= len(self.alive):
            return
        size = max(needed, 2 * len(self.alive))
        embeddings = np.zeros((size, self.dim), dtype=np.float32)
        embeddings[: len(self.embeddings)] = self.embeddings
        alive = np.zeros(size, dtype=bool)
        alive[: len(self.alive)] = self.alive
        self.embeddings, self.alive = embeddings, alive
