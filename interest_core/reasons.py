"""Why an item is recommended, in words a person understands.

The feature that contributed most to an item's fused score picks the kind of reason:
content ("because you rated 'X' 5", "similar to 'X' you bought", "similar to your search
'jazz vinyl'", "matches your interest in Sci-Fi"), co-occurrence ("people who liked 'X'
also liked this") or trending ("popular now"). The user's anchors (recent positive items,
texts, top labels) are gathered once per user and compared with one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from interest_core.catalog import Catalog
from interest_core.cooccurrence import CoOccurrence
from interest_core.interest import RecentItem, UserState

__all__ = [
    "Anchors",
    "content_reason",
    "content_reasons",
    "cooccurrence_reason",
    "cooccurrence_reasons",
]

_ANCHOR_ITEMS = 20  # newest positive items a content reason may point at
_LABEL_REASON_BELOW = 0.6  # a label reason when no single item is at least this similar


@dataclass
class Anchors:
    """A user's recent positive items and texts (unit vectors) and top labels."""

    items: list[RecentItem]
    #: The items' catalog rows (an item is never explained by itself).
    rows: np.ndarray
    titles: list[str]
    item_vectors: np.ndarray
    texts: list[str]
    text_vectors: np.ndarray
    labels: list[str]

    @classmethod
    def of(cls, state: UserState | None, catalog: Catalog, labels: Sequence[str]) -> Anchors:
        """Anchors of ``state`` over the live catalog; ``labels`` are its top labels."""
        items: list[RecentItem] = []
        rows: list[int] = []
        if state is not None:
            for item in reversed(state.recent):
                row = catalog.row(item.item_id)
                if row is None or item.weight <= 0.0 or row in rows:
                    continue
                items.append(item)
                rows.append(row)
                if len(rows) == _ANCHOR_ITEMS:
                    break
        texts = [t.text for t in state.texts] if state is not None else []
        text_vectors = (
            state.text_dirs.astype(np.float32)
            if state is not None and texts
            else np.zeros((0, catalog.dim), np.float32)
        )
        return cls(
            items=items,
            rows=np.asarray(rows, dtype=np.int64),
            titles=[catalog.titles[r] for r in rows],
            item_vectors=catalog.embeddings[rows],
            texts=texts,
            text_vectors=text_vectors,
            labels=list(labels),
        )


def content_reason(anchors: Anchors, catalog: Catalog, row: int) -> str:
    """The nearest anchor (item or text) to item ``row``, or a matching top label."""
    return content_reasons(anchors, catalog, [row])[0]


def content_reasons(anchors: Anchors, catalog: Catalog, rows: Sequence[int]) -> list[str]:
    """:func:`content_reason` of each of ``rows``: one product with the item anchors and
    one with the texts for all of them."""
    wanted = np.asarray(rows, dtype=np.int64)
    vectors = catalog.embeddings[wanted]
    best_items, best_coss = np.full(len(wanted), -1), np.full(len(wanted), -1.0)
    if anchors.items:
        item_cos = vectors @ anchors.item_vectors.T
        # Never explain an item by itself (it may be re-recommended when not filtered).
        item_cos = np.where(anchors.rows[None, :] == wanted[:, None], -2.0, item_cos)
        best_items = item_cos.argmax(axis=1)
        best_coss = item_cos[np.arange(len(wanted)), best_items]
    text_cos = vectors @ anchors.text_vectors.T if anchors.texts else None
    out: list[str] = []
    for n, row in enumerate(wanted.tolist()):
        best_item, best_cos = int(best_items[n]), float(best_coss[n])
        out.append(_content_reason(anchors, catalog, row, best_item, best_cos, text_cos, n))
    return out


def _content_reason(
    anchors: Anchors,
    catalog: Catalog,
    row: int,
    best_item: int,
    best_cos: float,
    text_cos: np.ndarray | None,
    n: int,
) -> str:
    """One row's reason from its nearest item anchor and (row ``n`` of) the text cosines."""
    if text_cos is not None:
        i = int(np.argmax(text_cos[n]))
        if float(text_cos[n, i]) >= best_cos:
            return f"similar to your search '{anchors.texts[i]}'"
    if best_cos < _LABEL_REASON_BELOW:
        item_labels = set(catalog.labels[row])
        for label in anchors.labels:
            if label in item_labels:
                return f"matches your interest in {label}"
    if best_item >= 0 and best_cos > -2.0:
        item, title = anchors.items[best_item], anchors.titles[best_item]
        if item.action.startswith("rated "):
            return f"because you rated '{title}' {item.action[6:]}"
        return f"similar to '{title}' you {item.action}"
    return "popular now"


def cooccurrence_reason(
    history_rows: Sequence[int],
    history_weights: Sequence[float],
    cooccurrence: CoOccurrence,
    catalog: Catalog,
    row: int,
) -> str:
    """Names the recent item that contributed most to ``row``'s co-occurrence score
    (``ValueError`` when rows and weights differ in number)."""
    return cooccurrence_reasons(history_rows, history_weights, cooccurrence, catalog, [row])[0]


def cooccurrence_reasons(
    history_rows: Sequence[int],
    history_weights: Sequence[float],
    cooccurrence: CoOccurrence,
    catalog: Catalog,
    rows: Sequence[int],
) -> list[str]:
    """:func:`cooccurrence_reason` of each of ``rows``, in one compiled call."""
    ats = cooccurrence.strongest_each(history_rows, history_weights, rows).tolist()
    return [
        "popular now"
        if at < 0
        else f"people who liked '{catalog.titles[history_rows[at]]}' also liked this"
        for at in ats
    ]
