"""Event weights: the sign and order of "more / less like this" per event type."""

from __future__ import annotations

import pytest

from interest_core.records import Event
from interest_core.signals import EVENT_WEIGHTS, event_weight


def _event(kind: str, rating: float | None = None) -> Event:
    item = None if kind in ("search", "chat") else "i1"
    text = "jazz" if kind in ("search", "chat", "review") else None
    return Event("u", 1.0, kind, "e1", item_id=item, text=text, rating=rating)


def test_positive_events_order_purchase_cart_click_view() -> None:
    weights = [event_weight(_event(k)) for k in ("purchase", "add_to_cart", "click", "view")]
    assert weights == sorted(weights, reverse=True) and weights[-1] == 1.0
    assert all(event_weight(_event(k)) > 0 for k in EVENT_WEIGHTS)


@pytest.mark.parametrize(
    ("rating", "expected"),
    [(5.0, 3.0), (4.0, 1.8), (2.5, 0.0), (0.0, -1.0), (1.0, -0.6)],
)
def test_ratings_scale_around_the_midpoint(rating: float, expected: float) -> None:
    assert event_weight(_event("rate", rating), negative_weight=0.5) == pytest.approx(expected)


def test_negative_feedback_maps_to_negative_weights() -> None:
    # skip pushes away with the configured weight, dislike twice as hard, a low rating
    # scaled by the same weight: all negative, and they grow with negative_weight.
    for negative_weight in (0.25, 0.5, 1.0):
        skip = event_weight(_event("skip"), negative_weight)
        dislike = event_weight(_event("dislike"), negative_weight)
        low = event_weight(_event("rate", 0.0), negative_weight)
        assert skip == -negative_weight
        assert dislike == -2.0 * negative_weight
        assert low == -2.0 * negative_weight
    assert event_weight(_event("skip"), 0.0) == 0.0  # negative feedback switched off


def test_a_rate_without_rating_is_neutral() -> None:
    assert event_weight(Event("u", 1.0, "rate", "e1", item_id="i1")) == 0.0
