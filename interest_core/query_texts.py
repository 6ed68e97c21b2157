"""A micro-batch's event texts, redacted, encoded and classified in one encoder call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest_core.encoder import CachedEncoder, Encoder
from interest_core.intent import IntentModel
from interest_core.records import Event, UserDeletion
from interest_core.redact import redact
from interest_core.settings import EncoderSettings

__all__ = ["QueryTexts"]


class QueryTexts:
    """Turns the texts of events (searches, chats, reviews) into unit query vectors and
    intents. ``encoder`` encodes; ``settings`` supplies the query prefix (read per call).
    The intent model is built on first use (it encodes its own prototypes)."""

    def __init__(self, encoder: Encoder, settings: EncoderSettings) -> None:
        self.encoder = encoder
        self.settings = settings
        self._intent: IntentModel | None = None

    def intent_model(self) -> IntentModel:
        """The intent classifier over this encoder's space (built once)."""
        if self._intent is None:
            self._intent = IntentModel(self.encoder)
        return self._intent

    def cache_counters(self) -> tuple[int, int, int]:
        """The encoder cache's (hits, misses, texts encoded) so far; zeros without a cache."""
        if isinstance(self.encoder, CachedEncoder):
            return self.encoder.hits, self.encoder.misses, self.encoder.texts_encoded
        return 0, 0, 0

    def encode(
        self, events: Sequence[Event]
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, float]]]:
        """Redacted texts of the batch -> unit vectors and intents, in one encoder call."""
        texts = list(
            dict.fromkeys(
                redact(e.text) for e in events if e.text and not isinstance(e, UserDeletion)
            )
        )
        if not texts:
            return {}, {}
        prefix = self.settings.query_prefix
        matrix = np.asarray(self.encoder.encode([prefix + t for t in texts]), dtype=np.float32)
        intents = self.intent_model().classify(matrix)
        return dict(zip(texts, matrix, strict=True)), dict(zip(texts, intents, strict=True))
