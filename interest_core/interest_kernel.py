"""The per-user interest update for a run of events, compiled (numba).

:meth:`interest_core.interest.InterestModel.apply` is the plain reference: one event,
a dozen numpy calls on 384-wide vectors, about 30 us of interpreter overhead per event.
The update is sequential by nature (the short-term mass cap and the slot clustering
branch on the state left by the previous event), so it does not vectorise across a
user's events; this kernel runs a user's whole run of events in one compiled call with
the same arithmetic:

- float32 vectors, each event's result rounded to float16 exactly as
  ``astype(np.float16)`` does (round half to even, subnormals included), so the state
  evolves as it does when it is stored after every event;
- decay ``2 ** (-elapsed / half_life)`` in event time, none for out-of-order events;
- the slot rules of the reference (join the nearest slot at cosine >= ``similarity``,
  else open one, else replace the weakest; negative events weaken the matching slot;
  slots at weight <= 1e-6 are dropped, order kept).

Norms and cosines are summed in float64 (the reference's BLAS sums float32 in its own
order), so results agree with the reference to float rounding: a float16 component may
differ by one unit in the last place (``tests/unit/test_core_interest_kernel.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["apply_run"]

_F16_MIN_NORMAL_BITS = 0x38800000  # 2**-14 as float32 bits
_F16_OVERFLOW_BITS = 0x477FF000  # 65520.0: rounds to infinity in float16
_SUBNORMAL_SCALE = 16777216.0  # 2**24: float16 subnormals are multiples of 2**-24
_DROP_BELOW = 1e-6  # slot weight at or below which a slot is dropped


@njit(cache=True, nogil=True)
def _round_to_f16(values: np.ndarray) -> None:  # pragma: no cover - compiled
    """Round float32 ``values`` in place to the nearest float16 (ties to even)."""
    bits = values.view(np.uint32)
    for i in range(values.shape[0]):
        b = np.int64(bits[i])
        magnitude = b & 0x7FFFFFFF
        if magnitude >= _F16_OVERFLOW_BITS:
            if magnitude <= 0x7F800000:  # finite too large, or infinity: infinity
                bits[i] = np.uint32((b & 0x80000000) | 0x7F800000)
        elif magnitude >= _F16_MIN_NORMAL_BITS:
            b = (b + 0xFFF + ((b >> 13) & 1)) & 0xFFFFE000
            bits[i] = np.uint32(b)
        else:
            values[i] = np.float32(
                np.rint(np.float64(values[i]) * _SUBNORMAL_SCALE) / _SUBNORMAL_SCALE
            )


@njit(cache=True, nogil=True)
def _decay(elapsed: float, half_life: float) -> float:  # pragma: no cover - compiled
    if elapsed <= 0.0 or half_life <= 0.0 or math.isinf(half_life):
        return 1.0
    return 2.0 ** (-elapsed / half_life)


@njit(cache=True, nogil=True)
def _norm(values: np.ndarray) -> float:  # pragma: no cover - compiled
    total = 0.0
    for i in range(values.shape[0]):
        v = np.float64(values[i])
        total += v * v
    return math.sqrt(np.float64(np.float32(total)))


@njit(cache=True, nogil=True)
def _accumulate(
    direction: np.ndarray,
    mass: float,
    last_ts: float,
    vector: np.ndarray,
    weight: float,
    ts: float,
    half_life: float,
    scratch: np.ndarray,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """``direction`` (float32, float16 values) updated in place; returns (mass, ts)."""
    kept = mass * _decay(ts - last_ts, half_life) if mass != 0.0 else 0.0
    kept32 = np.float32(kept)
    weight32 = np.float32(weight)
    for i in range(direction.shape[0]):
        scratch[i] = direction[i] * kept32 + weight32 * vector[i]
    norm = _norm(scratch)
    if norm <= 1e-9:
        direction[:] = 0.0
        return 0.0, max(ts, last_ts)
    norm32 = np.float32(norm)
    for i in range(direction.shape[0]):
        direction[i] = scratch[i] / norm32
    _round_to_f16(direction)
    return norm, max(ts, last_ts)


@njit(cache=True, nogil=True)
def _is_zero(vector: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether every component of ``vector`` is 0 (such an event changes nothing)."""
    nonzero = False
    for i in range(vector.shape[0]):
        if vector[i] != 0.0:
            nonzero = True
            break
    return not nonzero


@njit(cache=True, nogil=True)
def _nearest_slot(
    slot_dirs: np.ndarray, n_slots: int, vector: np.ndarray
) -> tuple[int, float]:  # pragma: no cover - compiled
    """(index, cosine) of the first of the ``n_slots`` slots most similar to ``vector``;
    (-1, -inf) when there are none. The cosine is summed in float64, rounded to float32."""
    nearest = -1
    best = -math.inf
    for s in range(n_slots):
        total = 0.0
        for i in range(vector.shape[0]):
            total += np.float64(slot_dirs[s, i]) * np.float64(vector[i])
        cosine = np.float64(np.float32(total))
        if cosine > best:
            best = cosine
            nearest = s
    return nearest, best


@njit(cache=True, nogil=True)
def _merge_into_slot(
    slot_dirs: np.ndarray,
    slot_weights: np.ndarray,
    slot: int,
    vector: np.ndarray,
    weight: float,
    scratch: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Fold a positive event into ``slot`` in place: its direction becomes the unit
    float32 sum of the weighted old direction and ``vector`` (zero if that vanishes),
    its weight grows by ``weight``. Rounding to float16 is left to the caller."""
    held = np.float32(slot_weights[slot])
    weight32 = np.float32(weight)
    for i in range(vector.shape[0]):
        scratch[i] = slot_dirs[slot, i] * held + weight32 * vector[i]
    norm = _norm(scratch)
    if norm <= 1e-9:
        slot_dirs[slot, :] = 0.0
    else:
        norm32 = np.float32(norm)
        for i in range(vector.shape[0]):
            slot_dirs[slot, i] = scratch[i] / norm32
    slot_weights[slot] += weight


@njit(cache=True, nogil=True)
def _replace_weakest_slot(
    slot_dirs: np.ndarray,
    slot_weights: np.ndarray,
    n_slots: int,
    vector: np.ndarray,
    weight: float,
) -> None:  # pragma: no cover - compiled
    """Put ``vector`` at ``weight`` in place of the first of the ``n_slots`` slots with
    the smallest weight."""
    weakest = 0
    for s in range(1, n_slots):
        if slot_weights[s] < slot_weights[weakest]:
            weakest = s
    slot_dirs[weakest, :] = vector
    slot_weights[weakest] = weight


@njit(cache=True, nogil=True)
def _compact_slots(
    slot_dirs: np.ndarray, slot_weights: np.ndarray, n_slots: int
) -> int:  # pragma: no cover - compiled
    """Drop slots at weight <= ``_DROP_BELOW`` in place (order kept), round the kept
    directions to float16; returns the number of slots kept."""
    kept = 0
    for s in range(n_slots):
        if slot_weights[s] > _DROP_BELOW:
            if kept != s:
                slot_dirs[kept, :] = slot_dirs[s, :]
                slot_weights[kept] = slot_weights[s]
            kept += 1
    for s in range(kept):
        _round_to_f16(slot_dirs[s])
    return kept


@njit(cache=True, nogil=True)
def apply_run(
    short_dir: np.ndarray,
    long_dir: np.ndarray,
    slot_dirs: np.ndarray,
    scalars: np.ndarray,
    slot_weights: np.ndarray,
    vectors: np.ndarray,
    weights: np.ndarray,
    times: np.ndarray,
    params: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Apply one user's events in order, in place; returns the number of slots after.

    ``short_dir``, ``long_dir`` (dim,) and ``slot_dirs`` (max_slots, dim) are float32
    holding float16 values; ``scalars`` (float64) is ``[short_mass, short_ts, long_mass,
    long_ts, slots_ts, n_slots]``; ``slot_weights`` (max_slots,) float64. ``vectors``
    (events, dim) float32 unit vectors, ``weights`` and ``times`` (events,) float64.
    ``params`` is ``[short_half_life_s, long_half_life_s, slot_half_life_s, max_slots,
    slot_similarity, short_term_max_mass, use_short_term, use_slots]``.
    """
    short_half_life, long_half_life, slot_half_life = params[0], params[1], params[2]
    max_slots = int(params[3])
    similarity = params[4]
    short_cap = params[5]
    use_short = params[6] != 0.0
    use_slots = params[7] != 0.0
    dim = short_dir.shape[0]
    scratch = np.empty(dim, dtype=np.float32)
    short_mass, short_ts = scalars[0], scalars[1]
    long_mass, long_ts = scalars[2], scalars[3]
    slots_ts = scalars[4]
    n_slots = int(scalars[5])
    for k in range(vectors.shape[0]):
        vector = vectors[k]
        weight = weights[k]
        ts = times[k]
        if weight == 0.0:
            continue
        if _is_zero(vector):
            continue
        if use_short:
            short_mass, short_ts = _accumulate(
                short_dir,
                min(short_mass, short_cap),
                short_ts,
                vector,
                weight,
                ts,
                short_half_life,
                scratch,
            )
        long_mass, long_ts = _accumulate(
            long_dir, long_mass, long_ts, vector, weight, ts, long_half_life, scratch
        )
        if not use_slots:
            continue
        factor = _decay(ts - slots_ts, slot_half_life)
        for s in range(n_slots):
            slot_weights[s] *= factor
        slots_ts = max(slots_ts, ts)
        nearest, best = _nearest_slot(slot_dirs, n_slots, vector)
        similar = nearest >= 0 and best >= similarity
        if weight < 0.0:
            if similar:
                slot_weights[nearest] = max(0.0, slot_weights[nearest] + weight * best)
        elif similar:
            _merge_into_slot(slot_dirs, slot_weights, nearest, vector, weight, scratch)
        elif n_slots < max_slots:
            slot_dirs[n_slots, :] = vector
            slot_weights[n_slots] = weight
            n_slots += 1
        else:
            _replace_weakest_slot(slot_dirs, slot_weights, n_slots, vector, weight)
        n_slots = _compact_slots(slot_dirs, slot_weights, n_slots)
    scalars[0], scalars[1] = short_mass, short_ts
    scalars[2], scalars[3] = long_mass, long_ts
    scalars[4] = slots_ts
    scalars[5] = n_slots
    return n_slots
