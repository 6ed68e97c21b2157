"""The real bundled model: embeddings and zero-shot intent (marked `model`)."""

from __future__ import annotations

import numpy as np
import pytest

from interest_core.intent import IntentModel

pytestmark = pytest.mark.model


def test_real_encoder_embeddings(real_encoder) -> None:  # type: ignore[no-untyped-def]
    texts = ["jazz vinyl records", "a vinyl record of bebop jazz", "how to repair a bicycle tyre"]
    rows = real_encoder.encode(texts)
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-4)
    assert rows[0] @ rows[1] > rows[0] @ rows[2] + 0.2
    # Same text, same row, whatever the batch it came in (length-sorted batching).
    alone = real_encoder.inner.encode(["a vinyl record of bebop jazz"])
    np.testing.assert_allclose(alone[0], rows[1], atol=1e-5)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want to buy these headphones right now, add them to my cart", "purchase"),
        ("which is better, the Sony or the Bose headphones?", "compare"),
        ("the product arrived broken and I want my money back", "complaint"),
        ("what is the battery life and the warranty of this model?", "info"),
        ("just looking around for something new", "browse"),
    ],
)
def test_intent_on_obvious_sentences(real_encoder, text: str, intent: str) -> None:  # type: ignore[no-untyped-def]
    model = IntentModel(real_encoder)
    [(label, confidence)] = model.classify(real_encoder.encode([text]))
    assert label == intent
    assert confidence > 0.3
