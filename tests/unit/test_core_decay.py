"""Decay maths: weights halve after one half-life, in event time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from interest_core.decay import decay_factor
from interest_core.interest import InterestModel, UserState
from interest_core.settings import ModelSettings
from interest_core.trending import Trending


def test_half_life_halves() -> None:
    assert decay_factor(3600.0, 3600.0) == pytest.approx(0.5)
    assert decay_factor(7200.0, 3600.0) == pytest.approx(0.25)
    assert decay_factor(0.0, 3600.0) == 1.0


def test_no_decay_cases() -> None:
    assert decay_factor(-10.0, 3600.0) == 1.0  # out-of-order event
    assert decay_factor(1e9, math.inf) == 1.0  # static profile


@given(
    st.floats(0, 1e7, allow_nan=False),
    st.floats(0, 1e7, allow_nan=False),
    st.floats(1.0, 1e7, allow_nan=False),
)
def test_decay_composes(a: float, b: float, half_life: float) -> None:
    assert decay_factor(a + b, half_life) == pytest.approx(
        decay_factor(a, half_life) * decay_factor(b, half_life), rel=1e-9, abs=1e-300
    )


def test_short_term_mass_halves_after_half_life() -> None:
    settings = ModelSettings(short_term_half_life_s=100.0)
    model = InterestModel(settings)
    state = UserState("u", 4)
    first = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    model.apply(state, first, 2.0, ts=1000.0)
    assert state.short_mass == pytest.approx(2.0)
    assert model.short_term_freshness(state, 1100.0) == pytest.approx(0.5)
    # A second, orthogonal event one half-life later: the first counts half.
    second = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)
    model.apply(state, second, 1.0, ts=1100.0)
    direction = state.short_dir.astype(np.float32)
    assert direction[0] == pytest.approx(direction[1], rel=1e-2)  # 2 * 0.5 == 1


def test_trending_halves() -> None:
    trending = Trending(half_life_s=10.0)
    trending.add(3, 4.0, ts=100.0)
    assert trending.scores(110.0, 5)[3] == pytest.approx(2.0)
    assert trending.scores(120.0, 5)[3] == pytest.approx(1.0)


def test_trending_survives_long_spans() -> None:
    trending = Trending(half_life_s=1.0)
    trending.add(0, 1.0, ts=0.0)
    trending.add(1, 1.0, ts=10_000.0)  # 2**10000 would overflow without rebasing
    scores = trending.scores(10_000.0, 2)
    assert np.all(np.isfinite(scores))
    assert scores[1] == pytest.approx(1.0)
    assert scores[0] == pytest.approx(0.0)
