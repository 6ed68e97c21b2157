"""How strongly each event says "more like this" (positive) or "less like this" (negative).

Weights are relative to a ``view`` (1.0): purchase > add_to_cart > click > view; a rating
is scaled around the midpoint 2.5 of the 0-5 scale (5 -> +3, 4 -> +1.8, below 2.5
negative); ``skip`` and ``dislike`` push away with ``negative_weight`` (and twice that).
"""

from __future__ import annotations

from interest_core.records import Event

__all__ = ["EVENT_WEIGHTS", "RATING_MIDPOINT", "event_weight"]

EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.5,
    "add_to_cart": 3.0,
    "purchase": 4.0,
    "review": 2.0,
    "search": 1.5,
    "chat": 1.0,
}
RATING_MIDPOINT = 2.5


def event_weight(event: Event, negative_weight: float = 0.5) -> float:
    """Signed interest weight of ``event`` (unitless, a view = 1.0)."""
    if event.type == "rate":
        rating = event.rating if event.rating is not None else RATING_MIDPOINT
        if rating >= RATING_MIDPOINT:
            return 3.0 * (rating - RATING_MIDPOINT) / RATING_MIDPOINT
        return -2.0 * negative_weight * (RATING_MIDPOINT - rating) / RATING_MIDPOINT
    if event.type == "skip":
        return -negative_weight
    if event.type == "dislike":
        return -2.0 * negative_weight
    return EVENT_WEIGHTS.get(event.type, 0.0)
