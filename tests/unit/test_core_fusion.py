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


def test_gradient_then_step_is_the_listwise_update() -> None:
    rng = np.random.default_rng(3)
    features = rng.random((12, 4))
    local = FusionWeights(["a", "b", "c", "d"], learning_rate=0.2, averaging=0.3)
    split = FusionWeights(["a", "b", "c", "d"], learning_rate=0.2, averaging=0.3)
    for positive in (3, 7, 1):
        local.update_listwise(features, positive)
        step = split.listwise_gradient(features, positive)
        assert step is not None
        split.apply_gradient(step[0])
    np.testing.assert_array_equal(local.weights, split.weights)
    np.testing.assert_array_equal(local.iterate, split.iterate)


def test_shared_fusion_applies_each_lesson_once_and_resumes_from_its_param() -> None:
    from interest_core.item_signals import FusionFeedback
    from interest_core.params import ParamRecord, parse_params
    from interest_core.shared_fusion import SharedFusion

    names = ["a", "b", "c"]
    lessons = [
        FusionFeedback(p, o, 0.0, (0.5, -0.2, -0.3 + 0.1 * o)) for o in range(5) for p in (0, 1)
    ]
    reference = SharedFusion(names, averaging=0.5)
    for lesson in lessons:
        assert reference.apply(lesson)
    # A learner published after 7 lessons, crashed, and its input was replayed from 3.
    first = SharedFusion(names, averaging=0.5)
    for lesson in lessons[:7]:
        first.apply(lesson)
    published = parse_params(first.to_param(created_at=1.0).to_json())
    assert isinstance(published, ParamRecord) and published.version == 1
    resumed = SharedFusion(names, averaging=0.5)
    assert resumed.restore(published)
    applied = [resumed.apply(lesson) for lesson in lessons[3:]]
    assert applied == [False] * 4 + [True] * 3
    np.testing.assert_allclose(resumed.fusion.weights, reference.fusion.weights, rtol=1e-12)
    np.testing.assert_allclose(resumed.fusion.iterate, reference.fusion.iterate, rtol=1e-12)
    assert resumed.to_param(created_at=2.0).version == 2
    assert not SharedFusion(["x", "y", "z"]).restore(published)  # other features


def test_a_feature_that_starts_at_zero_leaves_the_others_learning_as_without_it() -> None:
    """The hybrid's ``adapted`` feature starts at 0 and reads 0 while no layer is in
    use: the other weights must then learn exactly as if it did not exist."""
    rng = np.random.default_rng(3)
    without = FusionWeights(["a", "b"], learning_rate=0.2, initial=[1.0, 0.5])
    with_it = FusionWeights(["a", "b", "new"], learning_rate=0.2, initial=[1.0, 0.5, 0.0])
    for _ in range(50):
        features = rng.random((8, 2))
        positive = int(rng.integers(8))
        without.update_listwise(features, positive)
        with_it.update_listwise(np.hstack([features, np.zeros((8, 1))]), positive)
    assert np.allclose(with_it.weights[:2], without.weights, atol=1e-12)
    assert with_it.weights[2] == 0.0
    # Once the feature carries signal, it earns weight.
    for _ in range(200):
        features = rng.random((8, 3))
        features[0, 2] += 1.0
        with_it.update_listwise(features, 0)
    assert with_it.weights[2] > 0.1
