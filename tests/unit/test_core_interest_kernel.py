"""The compiled run update (``InterestModel.apply_many``) against the plain reference
(``InterestModel.apply`` once per event): the same states, to float rounding."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.interest import InterestModel, UserState
from interest_core.interest_kernel import _round_to_f16
from interest_core.settings import ModelSettings

F16_ULP_AT_ONE = 2.0**-10  # one float16 unit in the last place just below 1.0


def reference(model: InterestModel, state: UserState, vectors, weights, times) -> None:
    for vector, weight, ts in zip(vectors, weights, times, strict=True):
        model.apply(state, vector, float(weight), float(ts))


def assert_same_state(a: UserState, b: UserState, *, rel: float = 1e-3) -> None:
    for name in ("short_dir", "long_dir"):
        x, y = getattr(a, name).astype(np.float32), getattr(b, name).astype(np.float32)
        np.testing.assert_allclose(x, y, atol=2 * F16_ULP_AT_ONE, err_msg=name)
    assert len(a.slot_weights) == len(b.slot_weights)
    np.testing.assert_allclose(
        a.slot_dirs.astype(np.float32), b.slot_dirs.astype(np.float32), atol=2 * F16_ULP_AT_ONE
    )
    np.testing.assert_allclose(a.slot_weights, b.slot_weights, rtol=rel, atol=1e-9)
    for name in ("short_mass", "long_mass"):
        assert abs(getattr(a, name) - getattr(b, name)) <= rel * max(1.0, getattr(a, name)), name
    for name in ("short_ts", "long_ts", "slots_ts"):
        assert getattr(a, name) == getattr(b, name), name


@settings(deadline=None)  # the first call loads the compiled kernel
@given(st.lists(st.floats(-70000.0, 70000.0, allow_nan=False, width=32), max_size=64))
def test_float16_rounding_is_numpys(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    with np.errstate(over="ignore"):  # beyond 65504: infinity, as the kernel gives
        expected = array.astype(np.float16).astype(np.float32)
    _round_to_f16(array)
    np.testing.assert_array_equal(array, expected)


def test_float16_rounding_at_the_edges() -> None:
    edges = [0.0, -0.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-30, 65504.0]
    edges += [65519.0, 65520.0, 1e30, -1e30, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 6.1e-5]
    array = np.array(edges + [-e for e in edges], dtype=np.float32)
    with np.errstate(over="ignore"):
        expected = array.astype(np.float16).astype(np.float32)
    _round_to_f16(array)
    np.testing.assert_array_equal(array, expected)


# Event streams over a few orthogonal directions: every cosine the slot rules compare is
# 0 or 1, far from the threshold, so float rounding never flips a branch and the whole
# state (slot count and order included) must agree.
DIM = 8
steps = st.lists(
    st.tuples(
        st.integers(0, 5),  # direction (6 of the 8 axes)
        st.sampled_from([3.0, 1.8, 1.5, 1.0, 0.6, 0.0, -0.2, -0.5, -1.0]),  # weight
        # seconds after the previous event: bursts (short-term mass cap), days, disorder
        st.one_of(st.floats(0.0, 600.0), st.floats(-5_000.0, 2_000_000.0)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(1, 4), st.booleans(), st.booleans())
def test_run_update_matches_the_reference(
    events: list[tuple[int, float, float]], max_slots: int, use_slots: bool, use_short: bool
) -> None:
    model = InterestModel(
        ModelSettings(max_slots=max_slots, slot_similarity=0.55),
        use_slots=use_slots,
        use_short_term=use_short,
    )
    axes = np.eye(DIM, dtype=np.float32)
    vectors = np.stack([axes[d] for d, _, _ in events])
    weights = [w for _, w, _ in events]
    times = np.cumsum([gap for _, _, gap in events]) + 1_000_000.0
    expected, got = UserState("u", DIM), UserState("u", DIM)
    reference(model, expected, vectors, weights, times)
    model.apply_many(got, vectors, weights, times)
    assert_same_state(expected, got)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-1.0, 1.0, width=32), min_size=DIM, max_size=DIM),
            st.floats(-2.0, 3.0),
            st.floats(-1000.0, 100_000.0),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_decayed_vectors_match_for_any_directions(
    events: list[tuple[list[float], float, float]],
) -> None:
    """Short- and long-term vectors (no branching) for arbitrary directions and weights."""
    model = InterestModel(ModelSettings(), use_slots=False)
    vectors = np.array([v for v, _, _ in events], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.where(norms > 1e-3, vectors / np.maximum(norms, 1e-9), 0.0).astype(np.float32)
    weights = [w for _, w, _ in events]
    times = np.cumsum([gap for _, _, gap in events])
    expected, got = UserState("u", DIM), UserState("u", DIM)
    reference(model, expected, vectors, weights, times)
    model.apply_many(got, vectors, weights, times)
    assert_same_state(expected, got, rel=2e-3)


def test_a_long_realistic_run_in_the_real_width() -> None:
    """200 events on a pool of 30 item vectors (384 dims), ratings-like weights, some out
    of order, continuing from an existing state, in runs of varying length."""
    rng = np.random.default_rng(7)
    pool = rng.normal(size=(30, 384)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    rows = rng.integers(0, 30, 200)
    weights = rng.choice([3.0, 1.8, 1.0, 0.6, -0.2, -0.6, -1.0, 0.0], 200)
    times = np.cumsum(rng.exponential(300.0, 200)) + 1e9  # bursts: the short-term cap acts
    times[::9] -= 20_000.0  # out of order
    model = InterestModel(ModelSettings())
    expected, got = UserState("u", 384), UserState("u", 384)
    reference(model, expected, pool[rows], weights, times)
    start = 0
    for length in [1, 5, 40, 2, 100, 52]:
        part = slice(start, start + length)
        model.apply_many(got, pool[rows[part]], weights[part], times[part])
        start += length
    assert start == 200
    assert_same_state(expected, got)
    assert got.short_dir.dtype == np.float16 and got.slot_dirs.dtype == np.float16


def test_nothing_to_apply_changes_nothing() -> None:
    model = InterestModel(ModelSettings())
    state = UserState("u", DIM)
    model.apply(state, np.eye(DIM, dtype=np.float32)[0], 1.0, 10.0)
    before = state.to_bytes()
    model.apply_many(state, np.zeros((0, DIM), dtype=np.float32), [], [])
    model.apply_many(state, np.zeros((2, DIM), dtype=np.float32), [1.0, 2.0], [20.0, 30.0])
    model.apply_many(state, np.eye(DIM, dtype=np.float32)[:1], [0.0], [40.0])
    assert state.to_bytes() == before
