"""Learned fusion: weights move toward the feature that predicts the acted-on items."""

from __future__ import annotations

import numpy as np

from interest_core.fusion import FusionWeights


def test_weights_move_toward_the_predictive_feature() -> None:
    rng = np.random.default_rng(0)
    fusion = FusionWeights(["noise", "signal", "off"], ["noise", "signal"], learning_rate=0.1)
    assert fusion.as_dict() == {"noise": 1.0, "signal": 1.0, "off": 0.0}
    for _ in range(300):
        negatives = rng.random((20, 3))
        positive = rng.random(3)
        positive[1] = negatives[:, 1].max() + 0.1  # the acted-on item wins on "signal"
        fusion.update(positive, negatives)
    weights = fusion.as_dict()
    assert weights["signal"] > 1.5 > 0.5 > weights["noise"]
    assert weights["off"] == 0.0
    assert abs(sum(weights.values()) - 2.0) < 1e-9  # only ratios are learned


def test_weights_never_vanish_when_every_feature_loses() -> None:
    fusion = FusionWeights(["a", "b"], learning_rate=0.5)
    for _ in range(100):
        fusion.update(np.array([0.1, 0.2]), np.array([[0.9, 0.9], [0.8, 0.7]]))
    assert sum(fusion.as_dict().values()) > 1.99


def test_single_feature_does_not_learn() -> None:
    fusion = FusionWeights(["a", "b"], ["a"])
    assert fusion.update(np.array([1.0, 0.0]), np.array([[0.0, 1.0]])) == 0.0
    assert fusion.as_dict() == {"a": 1.0, "b": 0.0}


def test_listwise_weights_move_toward_the_predictive_feature() -> None:
    rng = np.random.default_rng(1)
    fusion = FusionWeights(["noise", "signal"], learning_rate=0.1, averaging=0.05)
    for _ in range(300):
        candidates = rng.random((30, 2))
        positive = int(np.argmax(candidates[:, 1]))  # the user picks the best on "signal"
        fusion.update_listwise(candidates, positive)
    weights = fusion.as_dict()
    assert weights["signal"] > 1.6 and weights["noise"] < 0.4
    assert abs(sum(weights.values()) - 2.0) < 1e-6


def test_initial_weights() -> None:
    fusion = FusionWeights(["a", "b", "c"], initial=[1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(fusion.weights, [0.6, 0.6, 1.8])
