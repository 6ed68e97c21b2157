"""Exponential time decay by half-life, in event time (seconds)."""

from __future__ import annotations

import math

__all__ = ["decay_factor"]


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """Weight multiplier after ``elapsed_s`` seconds for a half-life of ``half_life_s``
    seconds: 0.5 after one half-life, 1.0 for no elapsed time (or negative elapsed time,
    i.e. out-of-order events) and for an infinite or non-positive half-life (no decay)."""
    if elapsed_s <= 0.0 or half_life_s <= 0.0 or math.isinf(half_life_s):
        return 1.0
    return math.exp2(-elapsed_s / half_life_s)
