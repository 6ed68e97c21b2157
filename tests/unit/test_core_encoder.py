"""Encoders: hashing (cheap, real), the LRU cache, the transformer's errors and pooling."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from interest_core.encoder import (
    CachedEncoder,
    EncoderError,
    HashingEncoder,
    TransformerEncoder,
    encoder_from_settings,
    resolve_pooling,
)
from interest_core.settings import EncoderSettings, SettingsError


def test_hashing_is_normalised_and_deterministic() -> None:
    encoder = HashingEncoder(dim=64)
    rows = encoder.encode(["jazz vinyl records", "Jazz vinyl record", "rocket science", ""])
    assert rows.dtype == np.float32 and rows.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(rows[:3], axis=1), 1.0, rtol=1e-5)
    assert not rows[3].any()
    again = HashingEncoder(dim=64).encode(["jazz vinyl records"])
    np.testing.assert_array_equal(rows[0], again[0])
    assert rows[0] @ rows[1] > rows[0] @ rows[2]


class CountingEncoder:
    name = "counting"
    dim = 8

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.append(list(texts))
        return HashingEncoder(dim=8).encode(texts)


def test_cache_encodes_each_distinct_text_once() -> None:
    inner = CountingEncoder()
    cache = CachedEncoder(inner, capacity=2)
    first = cache.encode(["a", "b", "a"])
    assert inner.seen == [["a", "b"]]
    assert (cache.hits, cache.misses) == (1, 2)
    second = cache.encode(["b", "a"])
    assert inner.seen == [["a", "b"]]
    np.testing.assert_array_equal(first[1], second[0])
    cache.encode(["c"])  # evicts the least recently used ("b")
    assert len(cache) == 2
    cache.encode(["b"])
    assert inner.seen[-1] == ["b"]
    assert cache.texts_encoded == 4


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="does not exist"):
        TransformerEncoder(tmp_path / "nope")
    with pytest.raises(EncoderError, match=r"no config\.json"):
        TransformerEncoder(tmp_path)


def test_broken_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(EncoderError) as caught:
        TransformerEncoder(tmp_path)
    assert "\n" not in str(caught.value)


def test_pooling_auto(tmp_path: Path) -> None:
    assert resolve_pooling(tmp_path, "auto", SimpleNamespace(model_type="bert")) == "mean"
    decoder = SimpleNamespace(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    assert resolve_pooling(tmp_path, "auto", decoder) == "last"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True})
    )
    assert resolve_pooling(tmp_path, "auto", decoder) == "cls"
    assert resolve_pooling(tmp_path, "mean", decoder) == "mean"
    with pytest.raises(EncoderError):
        resolve_pooling(tmp_path, "max", None)


def test_token_budget_batches_group_by_length() -> None:
    encoder = object.__new__(TransformerEncoder)
    encoder.max_tokens_per_batch = 100
    lengths = [10, 50, 12, 48, 11, 49]
    batches = encoder._batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 100
    assert batches[0] == [1, 5]  # the longest together


def test_encoder_from_settings_hashing() -> None:
    encoder = encoder_from_settings(EncoderSettings(backend="hashing"))
    assert isinstance(encoder, CachedEncoder)
    assert encoder.encode(["x"]).shape == (1, encoder.dim)
    # An unknown backend is refused when the settings load, before any encoder is built.
    with pytest.raises(SettingsError, match="backend: must be one of transformer, hashing"):
        encoder_from_settings(EncoderSettings(backend="word2vec"))
