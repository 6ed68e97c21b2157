"""Zero-shot intent of a text event, from the encoder alone.

A few prototype sentences per intent are encoded once; a text's intent distribution is
the softmax over its best cosine to each intent's prototypes, divided by a temperature.
"""

from __future__ import annotations

import numpy as np

from interest_core.encoder import Encoder

__all__ = ["INTENT_PROTOTYPES", "IntentModel"]

INTENT_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "purchase": (
        "I want to buy this",
        "add it to my cart and check out",
        "where can I order this, I'll take two",
        "buy now with free shipping",
    ),
    "browse": (
        "just looking around",
        "show me something new",
        "any ideas for me",
        "I'm browsing, what do you have",
    ),
    "compare": (
        "which one is better",
        "compare these two models",
        "what is the difference between them",
        "this versus that, pros and cons",
    ),
    "complaint": (
        "this is broken and I want a refund",
        "terrible quality, very disappointed",
        "my order never arrived, awful service",
        "it stopped working after one day",
    ),
    "info": (
        "what are the specifications",
        "how does this work",
        "tell me more about it",
        "what is the return policy and warranty",
    ),
}


class IntentModel:
    """Softmax over cosine to intent prototypes; ``temperature`` in cosine units."""

    def __init__(self, encoder: Encoder, temperature: float = 0.05) -> None:
        self.labels = tuple(INTENT_PROTOTYPES)
        self.temperature = temperature
        self._groups: list[np.ndarray] = [
            np.asarray(encoder.encode(list(INTENT_PROTOTYPES[label])), dtype=np.float32)
            for label in self.labels
        ]

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, n_intents)`` probabilities for unit text ``vectors`` ``(n, dim)``."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self._groups[0].shape[1])
        best = np.stack([(vectors @ group.T).max(axis=1) for group in self._groups], axis=1)
        logits = best / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def classify(self, vectors: np.ndarray) -> list[tuple[str, float]]:
        """The most likely intent and its probability for each text vector."""
        probs = self.probabilities(vectors)
        return [
            (self.labels[int(i)], float(p[i]))
            for i, p in zip(probs.argmax(axis=1), probs, strict=True)
        ]
