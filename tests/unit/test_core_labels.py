"""Readable interest labels: item and text evidence, decay, shares, the cap."""

from __future__ import annotations

import numpy as np
import pytest

from interest_core.encoder import HashingEncoder
from interest_core.interest import UserState
from interest_core.labels import LabelModel, LabelVocabulary

DAY = 86400.0


def test_item_events_weigh_category_over_tags_and_shares_sum_to_one() -> None:
    model = LabelModel(half_life_s=30 * DAY)
    state = UserState("u", 8)
    model.add_item(state, ["Jazz", "vinyl", "live"], 2.0, 0.0)
    top = model.top(state, 5)
    assert top[0] == ("Jazz", pytest.approx(0.5))  # 2.0 of 2.0 + 1.0 + 1.0
    assert {label for label, _ in top} == {"Jazz", "vinyl", "live"}
    assert sum(w for _, w in top) == pytest.approx(1.0)


def test_negative_events_remove_a_label_and_zero_weight_is_ignored() -> None:
    model = LabelModel(half_life_s=30 * DAY)
    state = UserState("u", 8)
    model.add_item(state, ["Horror"], 1.0, 0.0)
    model.add_item(state, ["Horror"], 0.0, 1.0)
    assert model.top(state) == [("Horror", 1.0)]
    model.add_item(state, ["Horror"], -1.0, 2.0)
    assert model.top(state) == []


def test_old_interests_decay_below_new_ones() -> None:
    model = LabelModel(half_life_s=DAY)
    state = UserState("u", 8)
    model.add_item(state, ["Jazz"], 4.0, 0.0)
    model.add_item(state, ["Rock"], 1.0, 3 * DAY)  # jazz is now 4 / 2**3 = 0.5
    assert [label for label, _ in model.top(state)] == ["Rock", "Jazz"]


def test_a_user_keeps_the_strongest_32_labels() -> None:
    model = LabelModel(half_life_s=30 * DAY)
    state = UserState("u", 8)
    for n in range(40):
        model.add_item(state, [f"label-{n:02d}"], 1.0 + n, float(n))
    assert len(state.labels) == 32
    assert "label-39" in state.labels and "label-00" not in state.labels


def test_vocabulary_encodes_only_new_names_and_finds_the_nearest() -> None:
    calls: list[list[str]] = []
    inner = HashingEncoder(dim=64)

    class Counting:
        name, dim = inner.name, inner.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(list(texts))
            return inner.encode(texts)

    vocabulary = LabelVocabulary()
    vocabulary.refresh(["jazz", "rock"], Counting())
    vocabulary.refresh(["rock", "jazz", "folk"], Counting())
    assert calls == [["jazz", "rock"], ["folk"]]
    assert vocabulary.names == ["folk", "jazz", "rock"]
    nearest = vocabulary.nearest(inner.encode(["jazz"])[0], top=1)
    assert nearest[0][0] == "jazz" and nearest[0][1] == pytest.approx(1.0, abs=1e-5)
    assert LabelVocabulary().nearest(np.ones(64)) == []


def test_text_evidence_adds_by_cosine() -> None:
    model = LabelModel(half_life_s=30 * DAY)
    state = UserState("u", 8)
    model.add_text(state, [("Jazz", 0.9), ("Blues", 0.3)], 1.0, 0.0)
    assert state.labels == {"Jazz": pytest.approx(0.9), "Blues": pytest.approx(0.3)}
