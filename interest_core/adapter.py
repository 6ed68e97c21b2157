"""The adaptation layer: a learned linear map over the frozen encoder's space.

The encoder places items by how their texts read; people consume items together for
other reasons. The layer is one square matrix ``W`` (``dim x dim``) applied to encoder
vectors, trained online so that a user's interest vector lands near the items the user
acts on next (InfoNCE, formula in ``docs/ARCHITECTURE.md``).

Why linear, and where it is applied. A user's interest vectors are decayed, weighted
sums of raw encoder vectors (``interest_core.interest``), and a linear map commutes with
them: ``W (a u + b v) = a W u + b W v``. So every stored state, the catalog's raw
vectors, labels and intent stay in the encoder's RAW space, and ``W`` is applied only
where vectors meet: to the user's query vectors at ranking time and to the catalog's
rows for the index (``W v``, renormalised). A new version of ``W`` therefore needs no
migration of any stored state: re-project the catalog and carry on. The identity matrix
reproduces the system without the layer exactly (:attr:`AdapterWeights.is_identity`
short-cuts every product). The item index keeps raw vectors too: an approximate search
asks it with ``W^T W q`` (:meth:`Adapter.pull_back`), whose raw inner products are the
adapted ones up to each item's norm under ``W``, and the ranker re-scores exactly.

:class:`AdapterWeights` is the value that travels (version, encoder name, matrix) and
:func:`check_weights` rejects a malformed one with a reason. :class:`ExampleBuffer`
holds recent training examples; :class:`AdapterTrainer` fits ``W`` with torch on the CPU
or a GPU (device ``auto``; bf16/fp16 autocast on CUDA). This module imports numpy and
torch only (no faiss, no Kafka).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from interest_core.settings import AdapterSettings

__all__ = [
    "QUERY_KINDS",
    "Adapter",
    "AdapterError",
    "AdapterTrainer",
    "AdapterWeights",
    "ExampleBuffer",
    "ItemSpace",
    "OnlineAdapter",
    "SpaceSwap",
    "TrainingReport",
    "check_weights",
    "example_queries",
    "examples_per_second",
    "online_adapter",
]

#: The user vectors an example keeps, in this order: the short-term and long-term
#: interest directions and the interest slot nearest the item acted on (raw cosine), all
#: in the raw encoder space, just before the event. ``dynamic`` ranks by the best slot,
#: so the layer learns from the slot that would have found the item (measured on the
#: first half of MovieLens small and synthetic seed 7: dynamic NDCG@10 +5% and +3%).
QUERY_KINDS = ("short_term", "long_term", "slot")
#: Largest absolute entry accepted in a published matrix: a trained layer stays near
#: the identity (entries well under 10); anything larger is a broken trainer.
_MAX_ENTRY = 1e3


class AdapterError(ValueError):
    """A weights value is malformed: wrong shape, not finite, or for another encoder."""


@dataclass(frozen=True)
class AdapterWeights:
    """One version of the layer: ``matrix`` (``dim x dim`` float32, maps ``x -> W x``),
    the ``encoder`` it was trained over, its ``version`` (0: the untrained identity) and
    how many examples it has seen (``trained_examples``)."""

    matrix: np.ndarray
    encoder: str
    version: int = 0
    trained_examples: int = 0

    @property
    def dim(self) -> int:
        """Width of the vectors the layer maps."""
        return int(self.matrix.shape[0])

    @property
    def is_identity(self) -> bool:
        """True when ``W`` is exactly the identity (the system without the layer)."""
        return bool(np.array_equal(self.matrix, np.eye(self.dim, dtype=np.float32)))

    @property
    def nbytes(self) -> int:
        """Size of the matrix in bytes (float32)."""
        return int(self.matrix.nbytes)

    @classmethod
    def identity(cls, dim: int, encoder: str) -> AdapterWeights:
        """The untrained layer: ``W = I``, version 0."""
        return cls(np.eye(dim, dtype=np.float32), encoder, 0, 0)


def check_weights(
    matrix: Any, *, dim: int, encoder: str, expected_encoder: str
) -> np.ndarray | str:
    """``matrix`` as a float32 ``dim x dim`` array, or the reason it is rejected:
    another encoder than ``expected_encoder``, a wrong shape, a non-finite entry or an
    entry beyond +-1000."""
    if encoder != expected_encoder:
        return f"weights for encoder {encoder!r}, this process runs {expected_encoder!r}"
    try:
        array = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        return f"weights are not a numeric matrix: {exc}"
    if array.shape != (dim, dim):
        return f"weights have shape {array.shape}, expected ({dim}, {dim})"
    if not np.isfinite(array).all():
        return "weights hold NaN or infinite entries"
    if float(np.abs(array).max(initial=0.0)) > _MAX_ENTRY:
        return f"weights hold entries beyond +-{_MAX_ENTRY:g}"
    return array


class Adapter:
    """Applies one :class:`AdapterWeights` version: items and user queries into the
    adapted space. With the identity every method returns its input unchanged."""

    def __init__(self, weights: AdapterWeights) -> None:
        self.weights = weights
        self._identity = weights.is_identity
        self._transposed = np.ascontiguousarray(weights.matrix.T)

    @property
    def version(self) -> int:
        return self.weights.version

    @property
    def is_identity(self) -> bool:
        return self._identity

    def project_items(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``W v`` over their norm (float32; zero rows stay zero): catalog vectors
        for the index and every cosine taken against items."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._identity or not len(vectors):
            return vectors
        out = vectors @ self._transposed
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 1e-12)
        out[(norms <= 1e-12).ravel()] = 0.0
        return out

    def project_queries(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``W q`` rescaled to the norm of ``q`` (float32): a user vector keeps its
        length (the short-term freshness rides on it), only its direction adapts."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._identity or vectors.size == 0:
            return vectors
        out = vectors @ self._transposed
        before = np.linalg.norm(vectors, axis=-1, keepdims=True)
        after = np.linalg.norm(out, axis=-1, keepdims=True)
        scale = np.divide(before, after, out=np.zeros_like(after), where=after > 1e-12)
        return (out * scale).astype(np.float32, copy=False)

    def pull_back(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``W^T x`` (float32): adapted query vectors ``x = W q`` taken back to the
        raw space, so that ``(W^T x) . v = x . (W v)`` for every raw item vector ``v``
        (an index of raw vectors then ranks by adapted inner products)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._identity or vectors.size == 0:
            return vectors
        return vectors @ self.weights.matrix


class _RawItems(Protocol):
    """What :class:`ItemSpace` reads of a catalog: its raw row matrix (may be
    reallocated as it grows) and how many rows are in use."""

    embeddings: np.ndarray

    @property
    def rows_allocated(self) -> int: ...


class SpaceSwap:
    """A new layer version being put in use without stopping the engine.

    :meth:`run` (on any thread: it only reads the raw rows the catalog held when the
    swap began, and numpy releases the GIL in the products) projects them;
    :meth:`ItemSpace.commit`, on the engine's thread between two batches, then
    re-projects the rows the catalog changed meanwhile and switches over: the only
    pause. Rows are projected in chunks of ``chunk_rows`` to bound the extra memory.
    """

    def __init__(self, adapter: Adapter, raw: np.ndarray, width: int, chunk_rows: int = 16_384):
        self.adapter = adapter
        self.width = width
        self.projected: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self.dirty: set[int] = set()  # rows changed after the swap began
        self.done = False
        self.seconds = 0.0  # time spent in run()
        self._raw: np.ndarray = raw
        self._chunk_rows = chunk_rows

    def run(self) -> None:
        """Project the snapshot's rows (idempotent)."""
        if self.done:
            return
        started = time.perf_counter()
        projected = np.zeros(self._raw.shape, dtype=np.float32)
        for start in range(0, self.width, self._chunk_rows):
            stop = min(start + self._chunk_rows, self.width)
            projected[start:stop] = self.adapter.project_items(self._raw[start:stop])
        self.projected = projected
        self._raw = np.zeros((0, 0), dtype=np.float32)
        self.seconds = time.perf_counter() - started
        self.done = True


class ItemSpace:
    """The catalog's item vectors as every cosine against items sees them.

    Holds the :class:`Adapter` in use and, when it is not the identity, the adapted
    matrix (``W v / |W v|`` per raw row ``v``, rows as the catalog's). ``vectors`` is the
    catalog's own raw matrix under the identity, so an untrained engine reads exactly
    what it read before the layer existed. A new version goes through :meth:`begin`
    (validation), :meth:`SpaceSwap.run` (the projection, on any thread) and
    :meth:`commit` (between two batches); :meth:`use` does all three at once.
    ``encoder`` names the encoder whose space this is (weights for another are refused);
    ``on_switch`` is called after each switch (the ranker forgets rankings scored in the
    old space).
    """

    def __init__(
        self,
        catalog: _RawItems,
        encoder: str,
        *,
        on_switch: Callable[[], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.on_switch = on_switch
        dim = int(catalog.embeddings.shape[1])
        self.adapter = Adapter(AdapterWeights.identity(dim, encoder))
        self._projected: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._open: list[SpaceSwap] = []

    @property
    def version(self) -> int:
        """Version of the layer in use (0: the untrained identity)."""
        return self.adapter.version

    @property
    def vectors(self) -> np.ndarray:
        """The item matrix to score with (rows x dim, float32)."""
        if self.adapter.is_identity:
            return self.catalog.embeddings
        self._fit()
        return self._projected

    def _fit(self) -> None:
        size, dim = self.catalog.embeddings.shape
        if self._projected.shape[0] < size or self._projected.shape[1] != dim:
            grown = np.zeros((size, dim), dtype=np.float32)
            if self._projected.shape[1] == dim:
                grown[: len(self._projected)] = self._projected
            self._projected = grown

    def updated(self, rows: Sequence[int], raw: np.ndarray) -> None:
        """Rows whose raw vectors are now ``raw`` (after a catalog upsert)."""
        for swap in self._open:
            swap.dirty.update(int(r) for r in rows)
        if not self.adapter.is_identity and len(rows):
            self._fit()
            self._projected[list(rows)] = self.adapter.project_items(raw)

    def removed(self, rows: Sequence[int]) -> None:
        """Rows that died (their raw vectors are zero now)."""
        for swap in self._open:
            swap.dirty.update(int(r) for r in rows)
        if not self.adapter.is_identity and len(rows):
            self._fit()
            self._projected[list(rows)] = 0.0

    def begin(self, weights: AdapterWeights) -> SpaceSwap | str:
        """Start putting ``weights`` in use: the swap to :meth:`SpaceSwap.run`, or the
        reason they are refused (wrong width, not finite, another encoder). Nothing
        changes until :meth:`commit`; no user state and not the item index (it keeps
        raw vectors) ever change."""
        dim = int(self.catalog.embeddings.shape[1])
        checked = check_weights(
            weights.matrix, dim=dim, encoder=weights.encoder, expected_encoder=self.encoder
        )
        if isinstance(checked, str):
            return checked
        adapter = Adapter(
            AdapterWeights(checked, weights.encoder, weights.version, weights.trained_examples)
        )
        swap = SpaceSwap(adapter, self.catalog.embeddings, self.catalog.rows_allocated)
        if adapter.is_identity:
            swap.done = True  # nothing to project: the raw rows are the vectors
        self._open.append(swap)
        return swap

    def commit(self, swap: SpaceSwap) -> int:
        """Switch to a finished swap; rows the catalog changed or added since it began
        are projected now. Returns how many. Raises ``ValueError`` if not run yet."""
        if not swap.done:
            raise ValueError("the swap has not run yet")
        if swap in self._open:
            self._open.remove(swap)
        self.adapter = swap.adapter
        late: list[int] = []
        if swap.adapter.is_identity:
            self._projected = np.zeros((0, 0), dtype=np.float32)
        else:
            self._projected = swap.projected
            self._fit()
            width = self.catalog.rows_allocated
            late = sorted(swap.dirty | set(range(swap.width, width)))
            if late:
                self._projected[late] = self.adapter.project_items(self.catalog.embeddings[late])
        if self.on_switch is not None:
            self.on_switch()
        return len(late)

    def use(self, weights: AdapterWeights) -> str | None:
        """Put ``weights`` in use at once (begin, run, commit); the reason when refused."""
        swap = self.begin(weights)
        if isinstance(swap, str):
            return swap
        swap.run()
        self.commit(swap)
        return None


class _InterestVectors(Protocol):
    """What :func:`example_queries` reads of a user state (interest_core.interest)."""

    short_dir: np.ndarray
    short_mass: float
    long_dir: np.ndarray
    long_mass: float
    slot_dirs: np.ndarray


def example_queries(
    state: _InterestVectors, dim: int, item: np.ndarray | None = None
) -> np.ndarray:
    """A user's raw query vectors, ``QUERY_KINDS`` rows (float32; zero where the user has
    none yet): the query side of a training example, taken before the event. The slot
    row is the slot whose direction is nearest ``item`` (the raw vector acted on); zero
    without slots or without ``item``."""
    queries = np.zeros((len(QUERY_KINDS), dim), dtype=np.float32)
    if state.short_mass > 0.0:
        queries[0] = state.short_dir
    if state.long_mass > 0.0:
        queries[1] = state.long_dir
    slots = state.slot_dirs
    if item is not None and len(slots):
        queries[2] = slots[int(np.argmax(slots.astype(np.float32) @ item))]
    return queries


class ExampleBuffer:
    """The most recent ``capacity`` training examples (a ring): per example the user's
    query vectors before the event (``len(QUERY_KINDS)`` rows, raw space, float16, zero
    when the user had none) and the catalog row acted on."""

    def __init__(self, dim: int, capacity: int = 50_000) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.dim = dim
        self.capacity = capacity
        self.queries = np.zeros((capacity, len(QUERY_KINDS), dim), dtype=np.float16)
        self.rows = np.zeros(capacity, dtype=np.int64)
        self.added = 0  # examples ever added
        #: Per catalog row, examples ever added with that row as the positive (grows):
        #: the positives' sampling frequency behind the popularity correction.
        self.counts = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, queries: np.ndarray, row: int) -> bool:
        """Keep one example; False (nothing kept) when every query vector is zero."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.shape != (len(QUERY_KINDS), self.dim) or not queries.any():
            return False
        at = self.added % self.capacity
        self.queries[at] = queries
        self.rows[at] = row
        self.added += 1
        if row >= len(self.counts):
            grown = np.zeros(max(row + 1, 2 * len(self.counts)), dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        self.counts[row] += 1
        return True

    def sample(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` examples drawn uniformly without replacement (all when fewer):
        queries ``(n, kinds, dim)`` float32 and rows ``(n,)``."""
        held = len(self)
        picked = rng.choice(held, size=min(count, held), replace=False)
        return self.queries[picked].astype(np.float32), self.rows[picked]


@dataclass(frozen=True)
class TrainingReport:
    """What one :meth:`AdapterTrainer.train` call did: optimiser steps, examples used
    (with repeats across steps), mean loss (nats) of the first and last step, seconds."""

    steps: int
    examples: int
    first_loss: float
    last_loss: float
    seconds: float
    device: str
    precision: str


@dataclass
class AdapterTrainer:
    """Fits ``W`` by InfoNCE over cosine similarities (see ``docs/ARCHITECTURE.md``).

    Hyper-parameters: ``temperature`` (cosine units), ``learning_rate`` (Adam),
    ``batch_size`` (examples per step), ``negatives`` (catalog rows sampled per step,
    shared by the batch; the batch's own positives are negatives too),
    ``identity_decay`` (weight of ``||W - I||^2``, keeps the layer near the encoder),
    ``popularity_correction`` (-1 to 1: how much of each candidate's log expected count
    among a step's candidates is subtracted from its logit. 1 is the logQ correction:
    the batch's positives make popular items negatives far more often than the full
    softmax would, and the correction removes that bias, so the layer rates popular
    items higher; a negative value adds it instead and pushes the layer the other way,
    toward items specific to the user rather than to everybody; 0: the plain loss),
    ``device`` (``auto``: CUDA when available, else CPU) and ``precision`` (``auto``:
    bf16 autocast on CUDA when supported, else fp16; fp32 on the CPU; or force one of
    ``fp32``, ``bf16``, ``fp16``). ``cpu_threads`` bounds torch's CPU threads while
    training (restored after): these small products run 8x slower on two threads than
    on one on a busy 2-core machine (78 ms vs 671 ms a step, measured). ``seed`` makes
    sampling and training repeatable.
    """

    dim: int
    temperature: float = 0.05
    learning_rate: float = 1e-3
    batch_size: int = 256
    negatives: int = 1024
    identity_decay: float = 1e-3
    popularity_correction: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    cpu_threads: int = 1
    seed: int = 0
    trained_examples: int = 0
    _state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        import torch

        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ValueError("temperature and learning_rate must be positive")
        if self.batch_size <= 0 or self.negatives < 0 or self.identity_decay < 0:
            raise ValueError("batch_size must be positive, negatives and identity_decay >= 0")
        if not -1.0 <= self.popularity_correction <= 1.0:
            raise ValueError("popularity_correction must be within [-1, 1]")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.precision == "auto":
            if self.device.startswith("cuda"):
                self.precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                self.precision = "fp32"
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {self.precision!r}")
        matrix = torch.eye(self.dim, dtype=torch.float32, device=self.device)
        weight = torch.nn.Parameter(matrix)
        self._state["weight"] = weight
        self._state["optimizer"] = torch.optim.Adam([weight], lr=self.learning_rate)
        self._state["scaler"] = torch.amp.GradScaler(
            "cuda", enabled=self.precision == "fp16" and self.device.startswith("cuda")
        )
        self._state["rng"] = np.random.default_rng(self.seed)
        self._state["identity"] = torch.eye(self.dim, dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ weights

    def weights(self, *, encoder: str, version: int) -> AdapterWeights:
        """The current ``W`` as a weights value (float32, on the CPU)."""
        matrix = self._state["weight"].detach().to("cpu", dtype=self._torch().float32).numpy()
        return AdapterWeights(matrix.copy(), encoder, version, self.trained_examples)

    def load(self, weights: AdapterWeights) -> None:
        """Continue from ``weights`` (e.g. the last published version after a restart)."""
        torch = self._torch()
        if weights.dim != self.dim:
            raise AdapterError(f"weights of width {weights.dim}, trainer of width {self.dim}")
        with torch.no_grad():
            self._state["weight"].copy_(torch.as_tensor(weights.matrix, device=self.device))
        self.trained_examples = weights.trained_examples

    @staticmethod
    def _torch() -> Any:
        import torch

        return torch

    # ------------------------------------------------------------------ training

    def loss(
        self,
        queries: Any,
        rows: Any,
        candidates: Any,
        candidate_rows: Any,
        log_expected: Any | None = None,
    ) -> Any:
        """Mean InfoNCE loss (nats) of a batch, as a torch scalar with gradient.

        ``queries`` ``(n, kinds, dim)`` raw user vectors (zero rows are ignored), ``rows``
        ``(n,)`` the catalog row each example acted on, ``candidates`` ``(m, dim)`` raw
        item vectors whose first ``n`` rows are the examples' positives (in order),
        ``candidate_rows`` ``(m,)`` their catalog rows. A candidate that is the
        example's own item elsewhere in the batch is masked, not a negative.
        ``log_expected`` ``(m,)``, when given, is subtracted from every candidate's
        logit, scaled by ``popularity_correction`` (the logQ correction: see
        :meth:`log_expected_counts`)."""
        torch = self._torch()
        functional = torch.nn.functional
        weight = self._state["weight"]
        n, kinds, dim = queries.shape
        flat = queries.reshape(n * kinds, dim)
        present = flat.abs().sum(dim=1) > 0
        owner = torch.arange(n, device=flat.device).repeat_interleave(kinds)[present]
        users = functional.normalize(flat[present] @ weight.T, dim=1)
        items = functional.normalize(candidates @ weight.T, dim=1)
        logits = (users @ items.T).float() / self.temperature  # (q, m)
        if log_expected is not None and self.popularity_correction != 0.0:
            logits = logits - self.popularity_correction * log_expected[None, :]
        same = candidate_rows[None, :] == rows[owner][:, None]
        target = owner  # the positive of example i is candidate i
        same[torch.arange(len(owner), device=flat.device), target] = False
        logits = logits.masked_fill(same, float("-inf"))
        nce = functional.cross_entropy(logits, target)
        drift = ((weight - self._state["identity"]) ** 2).sum()
        return nce + self.identity_decay * drift

    def log_expected_counts(
        self, candidate_rows: np.ndarray, counts: np.ndarray, batch: int, alive: int
    ) -> np.ndarray:
        """Log of how often each candidate is expected among one step's candidates:
        ``log(batch * p_j + negatives / alive)``, where ``p_j = (c_j + 1) / (sum c +
        alive)`` is item ``j``'s smoothed share of the positives seen (``counts`` per
        row) and ``negatives / alive`` its chance of being drawn uniformly. A popular
        item is a candidate (a negative for others) far more often than a rare one;
        subtracting this from its logit makes the loss estimate the full softmax instead
        of rewarding popularity (Yi et al. 2019, sampling-bias-corrected softmax)."""
        c = np.zeros(len(candidate_rows), dtype=np.float64)
        inside = candidate_rows < len(counts)
        c[inside] = counts[candidate_rows[inside]]
        total = float(counts.sum()) + max(alive, 1)
        expected = batch * (c + 1.0) / total + min(self.negatives, alive) / max(alive, 1)
        return np.log(expected).astype(np.float32)

    def step(
        self,
        queries: np.ndarray,
        rows: np.ndarray,
        catalog: np.ndarray,
        alive_rows: np.ndarray,
        counts: np.ndarray | None = None,
    ) -> float:
        """One optimiser step on a batch; returns its InfoNCE loss (nats).

        ``catalog`` is the raw item matrix (rows x dim, float32) indexed by catalog row;
        ``alive_rows`` the rows negatives may be drawn from; ``counts`` the positives
        seen per row (for the popularity correction; none: no correction)."""
        torch = self._torch()
        rng: np.random.Generator = self._state["rng"]
        sampled = (
            rng.choice(alive_rows, size=min(self.negatives, len(alive_rows)), replace=False)
            if self.negatives and len(alive_rows)
            else np.empty(0, dtype=np.int64)
        )
        candidate_rows = np.concatenate([rows, sampled]).astype(np.int64)
        device = self.device
        q = torch.as_tensor(queries, dtype=torch.float32, device=device)
        c = torch.as_tensor(catalog[candidate_rows], dtype=torch.float32, device=device)
        r = torch.as_tensor(rows, device=device)
        cr = torch.as_tensor(candidate_rows, device=device)
        log_expected = (
            torch.as_tensor(
                self.log_expected_counts(candidate_rows, counts, len(rows), len(alive_rows)),
                device=device,
            )
            if counts is not None and self.popularity_correction != 0.0
            else None
        )
        optimizer = self._state["optimizer"]
        scaler = self._state["scaler"]
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda") and self.precision != "fp32":
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                loss = self.loss(q, r, c, cr, log_expected)
        else:
            loss = self.loss(q, r, c, cr, log_expected)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        self.trained_examples += len(rows)
        return float(loss.detach())

    def train(
        self,
        buffer: ExampleBuffer,
        catalog: np.ndarray,
        alive: np.ndarray,
        *,
        steps: int,
    ) -> TrainingReport:
        """``steps`` optimiser steps, each on ``batch_size`` examples sampled from
        ``buffer``, over the raw ``catalog`` matrix (rows x dim) whose live rows are
        ``alive`` (bool per row). Does nothing when the buffer is empty."""
        torch = self._torch()
        started = time.perf_counter()
        alive_rows = np.flatnonzero(alive)
        losses: list[float] = []
        used = 0
        threads = torch.get_num_threads()
        if self.device == "cpu" and self.cpu_threads > 0:
            torch.set_num_threads(self.cpu_threads)
        try:
            if len(buffer) and len(alive_rows):
                rng: np.random.Generator = self._state["rng"]
                for _ in range(steps):
                    queries, rows = buffer.sample(self.batch_size, rng)
                    keep = alive[rows]  # an item deleted since the example was taken
                    if not keep.any():
                        continue
                    losses.append(
                        self.step(queries[keep], rows[keep], catalog, alive_rows, buffer.counts)
                    )
                    used += int(keep.sum())
        finally:
            torch.set_num_threads(threads)
        return TrainingReport(
            steps=len(losses),
            examples=used,
            first_loss=losses[0] if losses else math.nan,
            last_loss=losses[-1] if losses else math.nan,
            seconds=time.perf_counter() - started,
            device=self.device,
            precision=self.precision,
        )


class OnlineAdapter:
    """Training examples in, a new :class:`AdapterWeights` version out at a cadence.

    ``observe`` is the engine's ``on_example`` hook; ``tick(n)`` counts ``n`` more
    events applied and says whether ``train_every_events`` have passed since the last
    round; ``train_round`` runs ``ceil(new examples x passes / batch_size)`` optimiser
    steps (at least one) on the buffer and returns the next version, or None when there
    were fewer than ``min_new_examples`` new examples.
    """

    def __init__(
        self,
        trainer: AdapterTrainer,
        buffer: ExampleBuffer,
        *,
        encoder: str,
        train_every_events: int = 2000,
        passes: float = 2.0,
        min_new_examples: int = 1,
        version: int = 0,
    ) -> None:
        if train_every_events <= 0 or passes <= 0:
            raise ValueError("train_every_events and passes must be positive")
        self.trainer = trainer
        self.buffer = buffer
        self.encoder = encoder
        self.train_every_events = train_every_events
        self.passes = passes
        self.min_new_examples = max(1, min_new_examples)
        self.version = version
        self.reports: list[TrainingReport] = []
        self._events = 0
        self._examples_at_last_round = 0

    def observe(self, queries: np.ndarray, row: int) -> None:
        """One training example: the user's raw query vectors and the row acted on."""
        self.buffer.add(queries, row)

    @property
    def new_examples(self) -> int:
        """Examples added since the last round."""
        return self.buffer.added - self._examples_at_last_round

    def tick(self, events: int) -> bool:
        """Count ``events`` more applied events; True when a round is due."""
        self._events += events
        return self._events >= self.train_every_events

    def train_round(
        self, catalog: np.ndarray, alive: np.ndarray, *, max_steps: int | None = None
    ) -> AdapterWeights | None:
        """Train on the buffer over the raw ``catalog`` (rows x dim) with live rows
        ``alive`` (at most ``max_steps`` optimiser steps); the next version, or None when
        too few new examples came in."""
        self._events = 0
        new = self.new_examples
        if new < self.min_new_examples:
            return None
        steps = max(1, math.ceil(new * self.passes / self.trainer.batch_size))
        if max_steps is not None:
            steps = min(steps, max(1, max_steps))
        report = self.trainer.train(self.buffer, catalog, alive, steps=steps)
        self._examples_at_last_round = self.buffer.added
        if not report.steps:
            return None
        self.reports.append(report)
        self.version += 1
        return self.trainer.weights(encoder=self.encoder, version=self.version)


def online_adapter(
    dim: int,
    encoder: str,
    settings: AdapterSettings,
    *,
    train_every_events: int | None = None,
    seed: int = 0,
) -> OnlineAdapter:
    """An :class:`OnlineAdapter` (trainer at the identity, empty buffer) from settings;
    ``train_every_events`` overrides the settings' cadence."""
    trainer = AdapterTrainer(
        dim,
        temperature=settings.temperature,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        negatives=settings.negatives,
        identity_decay=settings.identity_decay,
        popularity_correction=settings.popularity_correction,
        device=settings.device,
        precision=settings.precision,
        cpu_threads=settings.cpu_threads,
        seed=seed,
    )
    return OnlineAdapter(
        trainer,
        ExampleBuffer(dim, settings.buffer_examples),
        encoder=encoder,
        train_every_events=train_every_events or settings.train_every_events,
        passes=settings.passes,
        min_new_examples=1,
    )


def examples_per_second(reports: Sequence[TrainingReport]) -> float:
    """Examples trained per second over ``reports`` (0.0 when none took time)."""
    seconds = sum(r.seconds for r in reports)
    return sum(r.examples for r in reports) / seconds if seconds > 0 else 0.0
