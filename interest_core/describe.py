"""What is held about one user, for people (``interest inspect``): a plain function over
a :class:`~interest_core.interest.UserState`, so describing a stored state needs no
engine, no catalog and no encoder."""

from __future__ import annotations

from typing import Any

import numpy as np

from interest_core.interest import InterestModel, UserState
from interest_core.labels import LabelModel, LabelVocabulary
from interest_core.records import Intent
from interest_core.settings import ModelSettings

__all__ = ["INTERESTS_SHOWN", "NEUTRAL_INTENT", "describe_state", "intent_of"]

INTERESTS_SHOWN = 5  # interest labels put in a recommendation and a description
NEUTRAL_INTENT = Intent("browse", 0.2)  # no text event yet: browse, at uniform confidence
_RECENT_SHOWN = 10  # recent items listed


def intent_of(state: UserState | None) -> Intent:
    """The latest text event's intent, or browse with low confidence when none."""
    if state is not None and state.intent:
        label, confidence = state.intent
        return Intent(label, confidence)
    return NEUTRAL_INTENT


def describe_state(
    state: UserState,
    model: ModelSettings,
    *,
    now_ts: float | None = None,
    interest: InterestModel | None = None,
    labels: LabelModel | None = None,
    vocabulary: LabelVocabulary | None = None,
) -> dict[str, Any]:
    """A JSON-ready description of ``state``.

    ``now_ts`` (unix seconds) is the time decay is read at (default: the state's last
    event). ``interest`` / ``labels`` default to models built from ``model``; the
    engine passes its own. ``vocabulary`` names each interest slot by its nearest
    labels (none without one).
    """
    interest = interest if interest is not None else InterestModel(model)
    labels = labels if labels is not None else LabelModel(model.long_term_half_life_s)
    if now_ts is None:
        now_ts = state.last_ts if state.last_ts is not None else 0.0
    slot_weights = interest.slot_weights_at(state, now_ts)
    slots = []
    for direction, weight in zip(state.slot_dirs, slot_weights, strict=True):
        nearest = (
            vocabulary.nearest(direction.astype(np.float32), top=3, min_cosine=-1.0)
            if vocabulary is not None
            else []
        )
        slots.append({"weight": round(weight, 4), "labels": [n for n, _ in nearest]})
    intent = intent_of(state)
    return {
        "user_id": state.user_id,
        "version": state.version,
        "last_event_ts": state.last_ts,
        "events_by_type": dict(sorted(state.counts.items())),
        "interests": [
            {"label": name, "weight": round(w, 4)} for name, w in labels.top(state, INTERESTS_SHOWN)
        ],
        "slots": slots,
        "short_term_freshness": round(interest.short_term_freshness(state, now_ts), 4),
        "intent": {"label": intent.label, "confidence": round(intent.confidence, 4)},
        "recent_items": [
            {"item_id": r.item_id, "ts": r.ts, "action": r.action}
            for r in list(state.recent)[-_RECENT_SHOWN:]
        ],
        "recent_texts": [t.text for t in state.texts],
        "state_bytes": len(state.to_bytes()),
    }
