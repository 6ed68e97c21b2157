"""Per-user interest state and its online update.

A user holds a short-term and a long-term interest vector (direction + mass, decayed by
half-lives in event time), up to ``max_slots`` interest slots (online clustering: an
event joins the nearest slot when cosine >= ``slot_similarity``, else opens a new slot or
replaces the weakest), a bounded history of recent items and texts, a bounded set of
seen items, readable label weights, counters by event type, the last event time, the
last applied offset and event ids (for idempotence) and a publication version.

Vectors are kept as float16, so the state is compact and export/import round-trips
exactly. Measured with the bundled 384-dim model: a full user (4 slots, 3 texts, 50
recent items, 64 event ids, 1000 seen items) exports to 20,043 bytes, one with 50 seen
items to 10,543 bytes; the vectors are 6,912 bytes of it
(``tests/unit/test_core_interest.py::test_bytes_per_user_with_the_real_width``).
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from interest_core.decay import decay_factor
from interest_core.settings import ModelSettings

__all__ = ["InterestModel", "RecentItem", "RecentText", "StateFormatError", "UserState"]

_MAGIC = b"IUS1"
_HEADER = struct.Struct("<4sII")  # magic, json length, dim
_EVENT_IDS_KEPT = 64
_TEXTS_KEPT = 3
_LABELS_KEPT = 32
#: The short-term vector keeps at most this much mass (in event weights, a view = 1)
#: from before an event: within a burst of events seconds apart, time decay alone would
#: make it the average of the whole burst instead of the last few interactions.
SHORT_TERM_MAX_MASS = 3.0


class StateFormatError(ValueError):
    """A serialised user state is corrupt, from another format, or of another width."""


@dataclass(slots=True)
class RecentItem:
    item_id: str
    ts: float
    weight: float  # signed event weight (see interest_core.signals)
    action: str  # "rated 5", "purchased", "clicked"... for reasons a person reads
    #: The item's positive events before this one, as the item knowledge had them (-1:
    #: not known, a state written before this was kept): how new the item was to the user.
    before: int = -1


@dataclass(slots=True)
class RecentText:
    text: str  # redacted, shortened
    ts: float


def _unit(vector: np.ndarray, dtype: type = np.float32) -> tuple[np.ndarray, float]:
    """``vector`` (float32) over its norm, as ``dtype``, and the norm."""
    norm = math.sqrt(float(np.dot(vector, vector)))
    if norm <= 1e-9:
        return np.zeros(vector.shape, dtype=dtype), 0.0
    return (vector / np.float32(norm)).astype(dtype, copy=False), norm


@dataclass
class UserState:
    """Everything held about one user. Vectors are unit directions (float16) with a mass."""

    user_id: str
    dim: int
    short_dir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    short_mass: float = 0.0
    short_ts: float = 0.0
    long_dir: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    long_mass: float = 0.0
    long_ts: float = 0.0
    slot_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    slot_weights: list[float] = field(default_factory=list)
    slots_ts: float = 0.0
    recent: deque[RecentItem] = field(default_factory=deque)
    texts: deque[RecentText] = field(default_factory=deque)
    text_dirs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    #: The seen items, oldest first, each with its catalog row (-1: not in the catalog)
    #: under catalog layout ``seen_layout`` (-1: the rows are not known): the mask of a
    #: user's seen items is then made without looking each id up
    #: (:meth:`~interest_core.candidates.Candidates.blocked`).
    seen: dict[str, int] = field(default_factory=dict)
    seen_layout: int = -1
    labels: dict[str, float] = field(default_factory=dict)
    labels_ts: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    last_ts: float | None = None
    last_offset: int | None = None
    event_ids: deque[str] = field(default_factory=deque)
    intent: tuple[str, float] | None = None
    version: int = 0
    active_at: float = 0.0  # last activity, wall-clock seconds when the caller gave one

    def __post_init__(self) -> None:
        if self.short_dir.size == 0:
            self.short_dir = np.zeros(self.dim, np.float16)
        if self.long_dir.size == 0:
            self.long_dir = np.zeros(self.dim, np.float16)
        if self.slot_dirs.size == 0:
            self.slot_dirs = np.zeros((0, self.dim), np.float16)
        if self.text_dirs.size == 0:
            self.text_dirs = np.zeros((0, self.dim), np.float16)

    # ------------------------------------------------------------------ idempotence

    def already_applied(self, event_id: str, offset: int | None) -> bool:
        """True when this event (by partition offset or event id) was applied before."""
        if offset is not None and self.last_offset is not None and offset <= self.last_offset:
            return True
        return event_id in self.event_ids

    def mark_applied(self, event_id: str, offset: int | None, event_type: str, ts: float) -> None:
        """Book-keeping after an event is applied: ids, offset, counters, last event time."""
        self.event_ids.append(event_id)
        while len(self.event_ids) > _EVENT_IDS_KEPT:
            self.event_ids.popleft()
        if offset is not None:
            self.last_offset = offset if self.last_offset is None else max(self.last_offset, offset)
        self.counts[event_type] = self.counts.get(event_type, 0) + 1
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    # ------------------------------------------------------------------ histories

    def remember_item(
        self,
        item: RecentItem,
        recent_limit: int,
        seen_limit: int,
        row: int = -1,
        layout: int = -1,
    ) -> None:
        """Append to the bounded history and the bounded seen set; ``row`` is the item's
        catalog row under catalog layout ``layout`` (unknown by default)."""
        self.recent.append(item)
        while len(self.recent) > recent_limit:
            self.recent.popleft()
        self.seen.pop(item.item_id, None)
        self.seen[item.item_id] = row
        if layout != self.seen_layout:
            self.seen_layout = -1  # rows of two layouts: all looked up again when read
        while len(self.seen) > seen_limit:
            del self.seen[next(iter(self.seen))]

    def remember_text(self, text: str, vector: np.ndarray, ts: float) -> None:
        """Keep the last few texts (and their vectors) for reasons like 'your search ...'."""
        self.texts.append(RecentText(text[:80], ts))
        dirs = np.vstack([self.text_dirs, vector.astype(np.float16)[None, :]])
        while len(self.texts) > _TEXTS_KEPT:
            self.texts.popleft()
            dirs = dirs[1:]
        self.text_dirs = dirs

    # ------------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """Compact binary form: header, JSON metadata, then float16 vectors."""
        meta: dict[str, Any] = {
            "u": self.user_id,
            "sm": self.short_mass,
            "st": self.short_ts,
            "lm": self.long_mass,
            "lt": self.long_ts,
            "sw": self.slot_weights,
            "slt": self.slots_ts,
            "r": [[r.item_id, r.ts, r.weight, r.action] for r in self.recent],
            # apart from "r", so that a reader of the four fields alone reads this state
            "rb": [r.before for r in self.recent],
            "tx": [[t.text, t.ts] for t in self.texts],
            "se": list(self.seen),
            "lb": self.labels,
            "lbt": self.labels_ts,
            "c": self.counts,
            "ts": self.last_ts,
            "o": self.last_offset,
            "e": list(self.event_ids),
            "i": list(self.intent) if self.intent else None,
            "v": self.version,
            "a": self.active_at,
        }
        body = orjson.dumps(meta)
        vectors = np.concatenate(
            [
                self.short_dir.astype(np.float16).ravel(),
                self.long_dir.astype(np.float16).ravel(),
                self.slot_dirs.astype(np.float16).ravel(),
                self.text_dirs.astype(np.float16).ravel(),
            ]
        )
        return _HEADER.pack(_MAGIC, len(body), self.dim) + body + vectors.astype("<f2").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, *, dim: int | None = None) -> UserState:
        """Inverse of :meth:`to_bytes`; raises :class:`StateFormatError` when ``blob`` is
        not a state of this format (or not of width ``dim`` when given)."""
        if len(blob) < _HEADER.size:
            raise StateFormatError("user state too short")
        magic, body_len, width = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            raise StateFormatError(f"not a user state (magic {magic!r})")
        if dim is not None and width != dim:
            raise StateFormatError(f"user state has width {width}, the encoder {dim}")
        try:
            meta = orjson.loads(blob[_HEADER.size : _HEADER.size + body_len])
            n_slots = len(meta["sw"])
            n_texts = len(meta["tx"])
            flat = np.frombuffer(blob[_HEADER.size + body_len :], dtype="<f2")
            if flat.size != width * (2 + n_slots + n_texts):
                raise StateFormatError("user state vectors have the wrong length")
            parts = flat.astype(np.float16).reshape(2 + n_slots + n_texts, width)
            return cls(
                user_id=str(meta["u"]),
                dim=width,
                short_dir=parts[0].copy(),
                short_mass=float(meta["sm"]),
                short_ts=float(meta["st"]),
                long_dir=parts[1].copy(),
                long_mass=float(meta["lm"]),
                long_ts=float(meta["lt"]),
                slot_dirs=parts[2 : 2 + n_slots].copy(),
                slot_weights=[float(w) for w in meta["sw"]],
                slots_ts=float(meta["slt"]),
                recent=_recent_items(meta["r"], meta.get("rb")),
                texts=deque(RecentText(str(a), float(b)) for a, b in meta["tx"]),
                text_dirs=parts[2 + n_slots :].copy(),
                seen=dict.fromkeys((str(s) for s in meta["se"]), -1),
                labels={str(k): float(v) for k, v in meta["lb"].items()},
                labels_ts=float(meta["lbt"]),
                counts={str(k): int(v) for k, v in meta["c"].items()},
                last_ts=None if meta["ts"] is None else float(meta["ts"]),
                last_offset=None if meta["o"] is None else int(meta["o"]),
                event_ids=deque(str(e) for e in meta["e"]),
                intent=None if not meta["i"] else (str(meta["i"][0]), float(meta["i"][1])),
                version=int(meta["v"]),
                active_at=float(meta["a"]),
            )
        except StateFormatError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"corrupt user state: {exc}") from exc


def _recent_items(entries: list[Any], befores: Any) -> deque[RecentItem]:
    """The history of a state record: ``entries`` of ``[item, ts, weight, action]`` and
    ``befores``, each item's positive events before it (None from a state written before
    they were kept: -1 each)."""
    if befores is None:
        befores = [-1] * len(entries)
    if not isinstance(befores, list) or len(befores) != len(entries):
        raise ValueError("history counts do not match the history")
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in befores):
        raise ValueError(f"history counts must be integers: {befores!r}"[:200])
    return deque(
        RecentItem(str(a), float(b), float(c), str(d), before)
        for (a, b, c, d), before in zip(entries, befores, strict=True)
    )


class InterestModel:
    """The online update of :class:`UserState` vectors.

    ``use_slots`` / ``use_short_term`` switch the interest slots and the short-term vector
    off (the "static" strategy); ``long_term_half_life_s`` may be ``inf`` (no decay).
    """

    def __init__(
        self,
        settings: ModelSettings,
        *,
        use_slots: bool = True,
        use_short_term: bool = True,
        long_term_half_life_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.use_slots = use_slots
        self.use_short_term = use_short_term
        self.short_term_max_mass = SHORT_TERM_MAX_MASS
        self.long_term_half_life_s = (
            settings.long_term_half_life_s
            if long_term_half_life_s is None
            else long_term_half_life_s
        )

    def apply_many(
        self,
        state: UserState,
        vectors: np.ndarray,
        weights: Sequence[float] | np.ndarray,
        times: Sequence[float] | np.ndarray,
    ) -> None:
        """:meth:`apply` for each row of ``vectors`` (unit, float32) with its signed
        weight and event time (seconds), in order, in one compiled call
        (:mod:`interest_core.interest_kernel`). Same result as the loop, to float
        rounding (at most one float16 unit in the last place per component)."""
        from interest_core.interest_kernel import apply_run

        count = len(weights)
        if count == 0:
            return
        dim = state.dim
        held = len(state.slot_weights)
        capacity = max(self.settings.max_slots, held, 1)
        slot_dirs = np.zeros((capacity, dim), dtype=np.float32)
        slot_dirs[:held] = state.slot_dirs
        slot_weights = np.zeros(capacity, dtype=np.float64)
        slot_weights[:held] = state.slot_weights
        short_dir = state.short_dir.astype(np.float32)
        long_dir = state.long_dir.astype(np.float32)
        scalars = np.array(
            [
                state.short_mass,
                state.short_ts,
                state.long_mass,
                state.long_ts,
                state.slots_ts,
                held,
            ],
            dtype=np.float64,
        )
        n_slots = apply_run(
            short_dir,
            long_dir,
            slot_dirs,
            scalars,
            slot_weights,
            np.ascontiguousarray(vectors, dtype=np.float32).reshape(count, dim),
            np.asarray(weights, dtype=np.float64),
            np.asarray(times, dtype=np.float64),
            self._kernel_params(),
        )
        state.short_dir = short_dir.astype(np.float16)
        state.long_dir = long_dir.astype(np.float16)
        state.short_mass, state.short_ts = float(scalars[0]), float(scalars[1])
        state.long_mass, state.long_ts = float(scalars[2]), float(scalars[3])
        state.slots_ts = float(scalars[4])
        state.slot_dirs = slot_dirs[:n_slots].astype(np.float16)
        state.slot_weights = slot_weights[:n_slots].tolist()

    def warm_up(self) -> None:
        """Load (or compile, the first time on a machine) the kernel behind
        :meth:`apply_many`, so that the first batch does not pay for it."""
        state = UserState("", 2)
        self.apply_many(state, np.eye(2, dtype=np.float32), [1.0, -1.0], [0.0, 1.0])

    def _kernel_params(self) -> np.ndarray:
        s = self.settings
        return np.array(
            [
                s.short_term_half_life_s,
                self.long_term_half_life_s,
                s.slot_half_life_s,
                s.max_slots,
                s.slot_similarity,
                self.short_term_max_mass,
                1.0 if self.use_short_term else 0.0,
                1.0 if self.use_slots else 0.0,
            ],
            dtype=np.float64,
        )

    def apply(self, state: UserState, vector: np.ndarray, weight: float, ts: float) -> None:
        """Move the user's vectors toward (weight > 0) or away from (weight < 0) the unit
        ``vector``, at event time ``ts`` (seconds). Out-of-order events do not decay.

        The plain reference of the update: the engine runs :meth:`apply_many`."""
        vector = np.asarray(vector, dtype=np.float32)
        if weight == 0.0 or not vector.any():
            return
        if self.use_short_term:
            state.short_dir, state.short_mass, state.short_ts = self._accumulate(
                state.short_dir,
                min(state.short_mass, self.short_term_max_mass),
                state.short_ts,
                vector,
                weight,
                ts,
                self.settings.short_term_half_life_s,
            )
        state.long_dir, state.long_mass, state.long_ts = self._accumulate(
            state.long_dir,
            state.long_mass,
            state.long_ts,
            vector,
            weight,
            ts,
            self.long_term_half_life_s,
        )
        if self.use_slots:
            self._update_slots(state, vector, weight, ts)

    @staticmethod
    def _accumulate(
        direction: np.ndarray,
        mass: float,
        last_ts: float,
        vector: np.ndarray,
        weight: float,
        ts: float,
        half_life_s: float,
    ) -> tuple[np.ndarray, float, float]:
        kept = mass * decay_factor(ts - last_ts, half_life_s) if mass else 0.0
        total = direction.astype(np.float32)
        total *= np.float32(kept)
        total += np.float32(weight) * vector
        unit, norm = _unit(total, np.float16)
        return unit, norm, max(ts, last_ts)

    def _update_slots(self, state: UserState, vector: np.ndarray, weight: float, ts: float) -> None:
        factor = decay_factor(ts - state.slots_ts, self.settings.slot_half_life_s)
        weights = [w * factor for w in state.slot_weights]
        state.slots_ts = max(state.slots_ts, ts)
        dirs = state.slot_dirs.astype(np.float32)
        nearest, best = -1, -math.inf
        if weights:
            cosines = (dirs @ vector).tolist()
            best = max(cosines)
            nearest = cosines.index(best)
        similar = nearest >= 0 and best >= self.settings.slot_similarity
        if weight < 0.0:
            # "Less like this": the matching slot loses weight; it is dropped at zero.
            if similar:
                weights[nearest] = max(0.0, weights[nearest] + weight * best)
        elif similar:
            merged, _ = _unit(dirs[nearest] * weights[nearest] + weight * vector)
            dirs[nearest] = merged
            weights[nearest] += weight
        elif len(weights) < self.settings.max_slots:
            dirs = np.vstack([dirs, vector[None, :]])
            weights.append(weight)
        else:
            weakest = weights.index(min(weights))
            dirs[weakest] = vector
            weights[weakest] = weight
        keep = [i for i, w in enumerate(weights) if w > 1e-6]
        if len(keep) == len(weights):
            state.slot_dirs = dirs.astype(np.float16)
            state.slot_weights = weights
        else:
            state.slot_dirs = dirs[keep].astype(np.float16)
            state.slot_weights = [weights[i] for i in keep]

    def short_term_freshness(self, state: UserState, now_ts: float) -> float:
        """How current the short-term vector is at ``now_ts``: 1.0 just after an event,
        0.5 one short-term half-life later, 0.0 when there is none."""
        if not self.use_short_term or state.short_mass <= 0.0:
            return 0.0
        return decay_factor(now_ts - state.short_ts, self.settings.short_term_half_life_s)

    def slot_weights_at(self, state: UserState, now_ts: float) -> list[float]:
        """Slot weights decayed to event time ``now_ts``."""
        factor = decay_factor(now_ts - state.slots_ts, self.settings.slot_half_life_s)
        return [w * factor for w in state.slot_weights]
