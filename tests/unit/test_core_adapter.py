"""The adaptation layer alone: its maths, its training, its validation."""

from __future__ import annotations

import numpy as np
import pytest

from interest_core.adapter import (
    QUERY_KINDS,
    Adapter,
    AdapterTrainer,
    AdapterWeights,
    ExampleBuffer,
    check_weights,
    example_queries,
)

DIM = 32


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_identity_maps_every_vector_to_itself() -> None:
    rng = np.random.default_rng(1)
    items = _unit(rng.normal(size=(20, DIM)))
    adapter = Adapter(AdapterWeights.identity(DIM, "enc"))
    assert adapter.is_identity
    assert adapter.project_items(items) is items or np.array_equal(
        adapter.project_items(items), items
    )
    query = items[:3] * 0.4
    assert np.array_equal(adapter.project_queries(query), query)


def test_projection_keeps_units_and_query_lengths() -> None:
    rng = np.random.default_rng(2)
    matrix = np.eye(DIM, dtype=np.float32) + 0.3 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    adapter = Adapter(AdapterWeights(matrix, "enc", 3))
    items = _unit(rng.normal(size=(10, DIM)))
    items[4] = 0.0  # a dead row stays dead
    projected = adapter.project_items(items)
    norms = np.linalg.norm(projected, axis=1)
    assert np.allclose(np.delete(norms, 4), 1.0, atol=1e-5)
    assert not projected[4].any()
    query = items[:2] * np.array([[0.25], [1.0]], dtype=np.float32)
    out = adapter.project_queries(query)
    assert np.allclose(np.linalg.norm(out, axis=1), [0.25, 1.0], atol=1e-5)
    expected = query[0] @ matrix.T
    assert np.allclose(out[0] / np.linalg.norm(out[0]), expected / np.linalg.norm(expected))


def test_a_linear_map_commutes_with_the_decayed_sums() -> None:
    """The reason no stored state migrates: W applied to a decayed sum of raw vectors
    points where the same decayed sum of W-mapped vectors points."""
    rng = np.random.default_rng(3)
    matrix = np.eye(DIM, dtype=np.float32) + 0.5 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    adapter = Adapter(AdapterWeights(matrix, "enc", 1))
    vectors = _unit(rng.normal(size=(6, DIM)))
    decay = np.float32(0.5) ** np.arange(6, dtype=np.float32)
    state = (decay[:, None] * vectors).sum(axis=0)
    mapped_state = (decay[:, None] * (vectors @ matrix.T)).sum(axis=0)
    got = adapter.project_queries(state[None, :])[0]
    assert np.allclose(got / np.linalg.norm(got), _unit(mapped_state), atol=1e-5)


@pytest.mark.parametrize(
    ("matrix", "encoder", "reason"),
    [
        (np.eye(DIM + 1), "enc", "shape"),
        (np.eye(DIM)[:, :5], "enc", "shape"),
        (np.full((DIM, DIM), np.nan), "enc", "NaN"),
        (np.where(np.eye(DIM) > 0, np.inf, 0.0), "enc", "NaN"),
        (np.eye(DIM) * 1e6, "enc", "beyond"),
        (np.eye(DIM), "other-model", "encoder"),
        ([["a"]], "enc", "numeric"),
    ],
)
def test_malformed_weights_are_rejected_with_a_reason(
    matrix: object, encoder: str, reason: str
) -> None:
    checked = check_weights(matrix, dim=DIM, encoder=encoder, expected_encoder="enc")
    assert isinstance(checked, str)
    assert reason in checked


def test_good_weights_pass_as_float32() -> None:
    checked = check_weights(np.eye(DIM) * 1.5, dim=DIM, encoder="enc", expected_encoder="enc")
    assert isinstance(checked, np.ndarray)
    assert checked.dtype == np.float32
    assert checked.shape == (DIM, DIM)


def test_buffer_keeps_the_newest_and_skips_empty_examples() -> None:
    buffer = ExampleBuffer(DIM, capacity=3)
    zero = np.zeros((len(QUERY_KINDS), DIM), dtype=np.float32)
    assert not buffer.add(zero, 1)
    for row in range(5):
        query = zero.copy()
        query[0, 0] = 1.0
        assert buffer.add(query, row)
    assert len(buffer) == 3
    assert sorted(buffer.rows.tolist()) == [2, 3, 4]
    queries, rows = buffer.sample(10, np.random.default_rng(0))
    assert sorted(rows.tolist()) == [2, 3, 4]
    assert queries.shape == (3, len(QUERY_KINDS), DIM)


def _co_consumption_log(
    rng: np.random.Generator, groups: int, per_group: int, examples: int
) -> tuple[np.ndarray, ExampleBuffer, np.ndarray]:
    """Items with random (unrelated) text vectors, consumed in groups: a user who acted
    on an item of group g acts next on another item of group g."""
    catalog = _unit(rng.normal(size=(groups * per_group, DIM)))
    group_of = np.repeat(np.arange(groups), per_group)
    buffer = ExampleBuffer(DIM, capacity=examples)
    for _ in range(examples):
        g = rng.integers(groups)
        before, after = rng.choice(np.flatnonzero(group_of == g), size=2, replace=False)
        query = np.zeros((len(QUERY_KINDS), DIM), dtype=np.float32)
        query[0] = catalog[before]  # short-term: the previous item
        query[1] = _unit(catalog[group_of == g].mean(axis=0))  # long-term: the group
        buffer.add(query, int(after))
    return catalog, buffer, group_of


def _same_group_margin(adapter: Adapter, catalog: np.ndarray, group_of: np.ndarray) -> float:
    """Mean cosine between items of one group minus mean cosine across groups."""
    projected = adapter.project_items(catalog)
    cosines = projected @ projected.T
    same = group_of[:, None] == group_of[None, :]
    np.fill_diagonal(same, False)
    other = group_of[:, None] != group_of[None, :]
    return float(cosines[same].mean() - cosines[other].mean())


def test_training_pulls_co_consumed_items_together() -> None:
    rng = np.random.default_rng(7)
    catalog, buffer, group_of = _co_consumption_log(rng, groups=8, per_group=6, examples=2000)
    alive = np.ones(len(catalog), dtype=bool)
    trainer = AdapterTrainer(
        DIM, temperature=0.1, learning_rate=0.01, batch_size=64, negatives=16, device="cpu"
    )
    before = _same_group_margin(Adapter(trainer.weights(encoder="e", version=0)), catalog, group_of)
    report = trainer.train(buffer, catalog, alive, steps=300)
    after_weights = trainer.weights(encoder="e", version=1)
    after = _same_group_margin(Adapter(after_weights), catalog, group_of)
    assert abs(before) < 0.05  # random texts: no structure to start with
    assert after > before + 0.2
    assert report.steps == 300
    assert report.last_loss < report.first_loss
    assert after_weights.trained_examples == report.examples
    assert not after_weights.is_identity
    # The next item of a group now ranks inside its group for a user who just took one.
    projected = Adapter(after_weights).project_items(catalog)
    query = Adapter(after_weights).project_queries(catalog[:1])[0]
    top = np.argsort(-(projected @ query))[1:6]
    assert (group_of[top] == group_of[0]).mean() >= 0.6


def test_an_untrained_trainer_is_the_identity_and_training_nothing_changes_nothing() -> None:
    trainer = AdapterTrainer(DIM, device="cpu")
    assert trainer.weights(encoder="e", version=0).is_identity
    empty = ExampleBuffer(DIM, capacity=4)
    report = trainer.train(empty, np.eye(DIM, dtype=np.float32), np.ones(DIM, dtype=bool), steps=5)
    assert report.steps == 0
    assert trainer.weights(encoder="e", version=0).is_identity


def test_examples_on_deleted_items_are_not_trained_on() -> None:
    rng = np.random.default_rng(5)
    catalog, buffer, _ = _co_consumption_log(rng, groups=2, per_group=3, examples=50)
    alive = np.zeros(len(catalog), dtype=bool)
    trainer = AdapterTrainer(DIM, batch_size=8, negatives=2, device="cpu")
    report = trainer.train(buffer, catalog, alive, steps=3)
    assert report.steps == 0
    assert trainer.weights(encoder="e", version=0).is_identity


def test_trainer_resumes_from_published_weights() -> None:
    rng = np.random.default_rng(6)
    matrix = np.eye(DIM, dtype=np.float32) + 0.1 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    trainer = AdapterTrainer(DIM, device="cpu")
    trainer.load(AdapterWeights(matrix, "e", 4, trained_examples=900))
    resumed = trainer.weights(encoder="e", version=5)
    assert np.array_equal(resumed.matrix, matrix)
    assert resumed.trained_examples == 900


def test_pull_back_turns_adapted_inner_products_into_raw_ones() -> None:
    rng = np.random.default_rng(8)
    matrix = np.eye(DIM, dtype=np.float32) + 0.3 * rng.normal(size=(DIM, DIM)).astype(np.float32)
    adapter = Adapter(AdapterWeights(matrix, "enc", 2))
    items = _unit(rng.normal(size=(15, DIM)))
    query = _unit(rng.normal(size=(1, DIM)))
    adapted_query = query @ matrix.T
    direct = (items @ matrix.T) @ adapted_query[0]
    via_raw = items @ adapter.pull_back(adapted_query)[0]
    assert np.allclose(direct, via_raw, atol=1e-4)


def test_the_buffer_counts_each_rows_positives() -> None:
    buffer = ExampleBuffer(DIM, capacity=2)
    query = np.ones((len(QUERY_KINDS), DIM), dtype=np.float32)
    for row in (3, 3, 0, 7):
        buffer.add(query, row)
    assert not buffer.add(np.zeros_like(query), 5)  # nothing kept, nothing counted
    assert len(buffer) == 2  # the ring forgets examples, the counts do not
    assert buffer.counts[[0, 3, 5, 7]].tolist() == [1, 2, 0, 1]


def test_a_popular_item_is_expected_among_the_candidates_more_often() -> None:
    trainer = AdapterTrainer(DIM, negatives=10, popularity_correction=1.0, device="cpu")
    counts = np.array([90, 9, 0, 1])
    got = trainer.log_expected_counts(np.array([0, 1, 2, 3, 9]), counts, batch=4, alive=100)
    p = (np.array([90, 9, 0, 1, 0]) + 1.0) / (100 + 100)  # row 9: never seen, past counts
    assert np.allclose(got, np.log(4 * p + 10 / 100), atol=1e-6)
    assert got[0] > got[1] > got[3] > got[2]


def test_the_correction_shifts_each_logit_by_its_log_expected_count() -> None:
    import torch

    rng = np.random.default_rng(11)
    queries = torch.as_tensor(rng.normal(size=(3, len(QUERY_KINDS), DIM)), dtype=torch.float32)
    candidates = torch.as_tensor(_unit(rng.normal(size=(6, DIM))))
    rows, candidate_rows = torch.arange(3), torch.arange(6)
    shift = torch.as_tensor([2.0, 0.0, 0.0, 0.0, 0.0, 0.0])

    def loss(strength: float, log_expected: torch.Tensor | None) -> float:
        trainer = AdapterTrainer(
            DIM, device="cpu", identity_decay=0.0, popularity_correction=strength
        )
        return float(trainer.loss(queries, rows, candidates, candidate_rows, log_expected).detach())

    base = loss(0.0, None)
    assert loss(0.0, shift) == pytest.approx(base)  # no correction: the shift is ignored
    assert loss(1.0, torch.zeros(6)) == pytest.approx(base)
    # Candidate 0 is the first example's positive and a negative of the other two: its
    # logit moves by 2 nats (1 at half strength, the other way below 0), so the loss does.
    full, partial, negative = loss(1.0, shift), loss(0.5, shift), loss(-1.0, shift)
    assert full != pytest.approx(base) and partial != pytest.approx(base)
    assert abs(partial - base) < abs(full - base)
    assert negative != pytest.approx(full)
    with pytest.raises(ValueError, match="popularity_correction"):
        AdapterTrainer(DIM, device="cpu", popularity_correction=1.5)


def _share_of(adapter: Adapter, catalog: np.ndarray, row: int, queries: np.ndarray) -> float:
    """Mean full-softmax probability (temperature 0.1) of ``row`` over the users."""
    scores = adapter.project_queries(queries) @ adapter.project_items(catalog).T / 0.1
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return float(probs[:, row].mean())


def test_the_correction_stops_the_batch_under_rating_a_popular_item() -> None:
    """Users (who share a common direction, as real interest vectors do) take the item
    closest to them, or (60% of the time) one blockbuster, row 0. Row 0 is in nearly
    every batch, so the uncorrected loss meets it as a negative far more often than the
    full softmax would; the logQ correction removes that sampling bias, and the layer
    then gives row 0 a clearly larger full-softmax share over the users."""
    rng = np.random.default_rng(12)
    catalog = _unit(rng.normal(size=(60, DIM)))
    alive = np.ones(len(catalog), dtype=bool)
    common = _unit(rng.normal(size=(1, DIM)))[0]
    buffer = ExampleBuffer(DIM, capacity=3000)

    def user() -> np.ndarray:
        return _unit(common + 0.5 * _unit(rng.normal(size=(1, DIM)))[0])

    for _ in range(3000):
        query = user()
        row = 0 if rng.random() < 0.6 else int(np.argmax(catalog[1:] @ query)) + 1
        buffer.add(np.stack([query] * len(QUERY_KINDS)), row)
    held_out = np.stack([user() for _ in range(200)])
    share = {}
    for strength in (0.0, 1.0):
        trainer = AdapterTrainer(
            DIM,
            temperature=0.1,
            learning_rate=0.01,
            batch_size=64,
            negatives=16,
            popularity_correction=strength,
            device="cpu",
        )
        trainer.train(buffer, catalog, alive, steps=200)
        share[strength] = _share_of(
            Adapter(trainer.weights(encoder="e", version=1)), catalog, 0, held_out
        )
    assert share[1.0] > share[0.0] + 0.1


def test_an_example_names_the_users_slot_closest_to_the_item() -> None:
    """``dynamic`` ranks by the best of the user's interest slots, so an example carries
    the slot nearest (raw cosine) the item acted on; none without slots or an item."""
    from types import SimpleNamespace

    rng = np.random.default_rng(13)
    slots = _unit(rng.normal(size=(3, DIM)))
    state = SimpleNamespace(
        short_dir=slots[0], short_mass=1.0, long_dir=slots[1], long_mass=1.0, slot_dirs=slots
    )
    item = _unit(slots[2:3] + 0.3 * rng.normal(size=(1, DIM)))[0]
    queries = example_queries(state, DIM, item)
    assert QUERY_KINDS[2] == "slot"
    assert np.array_equal(queries[2], slots[2])
    assert not example_queries(state, DIM)[2].any()
    state.slot_dirs = np.zeros((0, DIM), dtype=np.float32)
    assert not example_queries(state, DIM, item)[2].any()
