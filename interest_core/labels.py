"""Readable interest labels: what a person would say the user likes.

Labels come from the catalog's categories and tags. An item event adds its signed weight
to the item's labels (category 1.0, each tag 0.5); a text event adds to the labels whose
embedding is nearest the text (cosine >= ``min_cosine``, top 3). Label weights decay with
the long-term half-life in event time; a user keeps the strongest 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest_core.decay import decay_factor
from interest_core.encoder import Encoder
from interest_core.interest import UserState

__all__ = ["LabelModel", "LabelVocabulary"]

_KEPT = 32
_TAG_SHARE = 0.5


class LabelVocabulary:
    """The distinct catalog labels and their embeddings (encoded once per new label)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)

    def refresh(self, labels: Sequence[str], encoder: Encoder) -> None:
        """Make the vocabulary exactly ``labels`` (sorted), encoding only new names."""
        names = sorted(set(labels))
        if names == self.names:
            return
        known = dict(zip(self.names, self.vectors, strict=False)) if len(self.vectors) else {}
        new = [n for n in names if n not in known]
        if new:
            for name, vector in zip(new, encoder.encode(new), strict=True):
                known[name] = vector
        self.names = names
        self.vectors = (
            np.stack([known[n] for n in names]).astype(np.float32)
            if names
            else np.zeros((0, encoder.dim), dtype=np.float32)
        )

    def nearest(
        self, vector: np.ndarray, top: int = 3, min_cosine: float = 0.3
    ) -> list[tuple[str, float]]:
        """Up to ``top`` labels with cosine >= ``min_cosine`` to ``vector``, best first."""
        if not self.names:
            return []
        cosines = self.vectors @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-cosines)[:top]
        return [(self.names[i], float(cosines[i])) for i in order if cosines[i] >= min_cosine]


class LabelModel:
    """Decayed, event-weighted label counts per user."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s

    def _decay_to(self, state: UserState, ts: float) -> None:
        factor = decay_factor(ts - state.labels_ts, self.half_life_s)
        if factor != 1.0:
            state.labels = {k: v * factor for k, v in state.labels.items()}
        state.labels_ts = max(state.labels_ts, ts)

    def _add(self, state: UserState, label: str, amount: float) -> None:
        value = state.labels.get(label, 0.0) + amount
        if value > 1e-6:
            state.labels[label] = value
        else:
            state.labels.pop(label, None)

    def _trim(self, state: UserState) -> None:
        if len(state.labels) > _KEPT:
            kept = sorted(state.labels.items(), key=lambda kv: (-kv[1], kv[0]))[:_KEPT]
            state.labels = dict(kept)

    def add_item(self, state: UserState, labels: Sequence[str], weight: float, ts: float) -> None:
        """An event on an item with ``labels`` (category first) and signed ``weight``."""
        if not labels or weight == 0.0:
            return
        self._decay_to(state, ts)
        for position, label in enumerate(labels):
            self._add(state, label, weight * (1.0 if position == 0 else _TAG_SHARE))
        self._trim(state)

    def add_text(
        self, state: UserState, nearest: Sequence[tuple[str, float]], weight: float, ts: float
    ) -> None:
        """A text event whose nearest labels (with cosines) are ``nearest``."""
        if not nearest or weight == 0.0:
            return
        self._decay_to(state, ts)
        for label, cosine in nearest:
            self._add(state, label, weight * cosine)
        self._trim(state)

    def top(self, state: UserState, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` strongest labels with weights as shares of all the user's label
        weight (they sum to at most 1)."""
        if not state.labels:
            return []
        total = sum(state.labels.values())
        ranked = sorted(state.labels.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(label, value / total) for label, value in ranked]
