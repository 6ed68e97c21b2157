"""The trainer role without a broker: records in, versioned models-topic records out,
and what a worker does with them (accept, swap, refuse, roll back)."""

from __future__ import annotations

import numpy as np
import orjson

from consumers.batching import InputRecord
from consumers.trainer import (
    ADAPTER_PARAM,
    Trainer,
    adapter_spec,
    rollback_record,
    weights_of,
)
from interest_core.encoder import HashingEncoder
from interest_core.engine import Engine
from interest_core.params import ParamTable
from interest_core.records import CatalogItem, Rejected, parse_catalog
from interest_core.settings import Settings

DIM = 48


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings() -> Settings:
    return Settings().replace(
        adapter={
            "publish_every_s": 30.0,
            "min_new_examples": 50,
            "batch_size": 32,
            "negatives": 8,
            "learning_rate": 0.02,
            "temperature": 0.1,
            "device": "cpu",
        }
    )


def catalog_records(n: int = 30) -> list[InputRecord]:
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    out = []
    for i in range(n):
        title = " ".join("".join(rng.choice(letters, 5)) for _ in range(3))
        value = orjson.dumps({"item_id": f"p{i}", "title": title})
        out.append(InputRecord("catalog", 0, i, f"p{i}".encode(), value))
    out.append(InputRecord("catalog", 0, n, b"junk", b"{not json"))  # refused, not fatal
    return out


def event_records(users: int, start: int = 0) -> list[InputRecord]:
    """Each user clicks an item, then its partner (p2k <-> p2k+1) an hour later."""
    rng = np.random.default_rng(start + 1)
    out = []
    offset = start * 10
    for n in range(start, start + users):
        first = int(rng.integers(30)) if n % 2 else int(rng.integers(15)) * 2
        partner = first ^ 1
        for j, item in enumerate((first, partner)):
            event = {
                "event_id": f"e{n}-{j}",
                "user_id": f"u{n}",
                "ts": 1_700_000_000 + n * 10 + j * 3600,
                "type": "click",
                "item_id": f"p{item}",
            }
            out.append(InputRecord("events", n % 4, offset, f"u{n}".encode(), orjson.dumps(event)))
            offset += 1
    out.append(InputRecord("events", 0, offset, b"x", b"\xff not an event"))
    return out


def make_trainer(clock: Clock) -> Trainer:
    engine = Engine(HashingEncoder(dim=DIM), settings(), strategy="dynamic")
    trainer = Trainer(settings(), engine, clock=clock)
    trainer.apply_catalog_records(catalog_records())
    return trainer


def test_the_trainer_publishes_versions_at_its_cadence() -> None:
    clock = Clock()
    trainer = make_trainer(clock)
    assert trainer.engine.catalog_size == 30
    applied = trainer.learn_records(event_records(200))
    assert applied == 400 and trainer.events_rejected == 1
    assert trainer.online.new_examples == 200  # one per user: the partner click
    assert not trainer.due()  # the interval has not passed
    clock.now += 31
    assert trainer.due()
    record = trainer.train_round()
    assert record is not None
    assert record.name == ADAPTER_PARAM and record.version == 1
    assert record.model == trainer.engine.model_name
    assert record.shape == (DIM, DIM)
    assert record.meta["trained_examples"] > 0 and record.meta["steps"] >= 1
    assert not trainer.due()  # nothing new since
    trainer.learn_records(event_records(100, start=200))
    clock.now += 31
    second = trainer.train_round()
    assert second is not None and second.version == 2
    assert not np.array_equal(second.values, record.values)


def test_a_worker_accepts_the_record_and_swaps_without_restart() -> None:
    clock = Clock()
    trainer = make_trainer(clock)
    trainer.learn_records(event_records(300))
    clock.now += 31
    record = trainer.train_round()
    assert record is not None
    worker_engine = Engine(HashingEncoder(dim=DIM), settings(), strategy="hybrid")
    table = ParamTable([adapter_spec(DIM, worker_engine.model_name)])
    accepted = table.offer(ADAPTER_PARAM, record.to_json())
    assert not isinstance(accepted, Rejected) and accepted is not None
    items = [parse_catalog(r.key, r.value) for r in catalog_records()]
    worker_engine.upsert_items([i for i in items if isinstance(i, CatalogItem)])
    assert worker_engine.set_adapter(weights_of(accepted)) is None
    assert worker_engine.space.version == 1


def test_malformed_records_are_refused_with_a_reason() -> None:
    clock = Clock()
    trainer = make_trainer(clock)
    trainer.learn_records(event_records(100))
    clock.now += 31
    good = trainer.train_round()
    assert good is not None
    table = ParamTable([adapter_spec(DIM, "hashing")])
    assert not isinstance(table.offer(ADAPTER_PARAM, good.to_json()), Rejected)
    wrong_model = ParamTable([adapter_spec(DIM, "all-MiniLM-L6-v2")])
    refused = wrong_model.offer(ADAPTER_PARAM, good.to_json())
    assert isinstance(refused, Rejected) and refused.reason == "wrong_model"
    wrong_shape = ParamTable([adapter_spec(DIM + 1, "hashing")])
    refused = wrong_shape.offer(ADAPTER_PARAM, good.to_json())
    assert isinstance(refused, Rejected) and refused.reason == "wrong_shape"
    broken = orjson.loads(good.to_json())
    broken["version"] = 9
    broken["data"] = broken["data"][:-8] + "AAAAAAA="  # bytes changed, checksum not
    refused = table.offer(ADAPTER_PARAM, orjson.dumps(broken))
    assert isinstance(refused, Rejected)
    held = table.get(ADAPTER_PARAM)
    assert held is not None and held.version == good.version


def test_rollback_republishes_an_old_matrix_as_the_newest_version() -> None:
    clock = Clock()
    trainer = make_trainer(clock)
    trainer.learn_records(event_records(100))
    clock.now += 31
    v1 = trainer.train_round()
    trainer.learn_records(event_records(100, start=100))
    clock.now += 31
    v2 = trainer.train_round()
    assert v1 is not None and v2 is not None
    table = ParamTable([adapter_spec(DIM, "hashing")])
    for record in (v1, v2):
        table.offer(ADAPTER_PARAM, record.to_json())
    # Republishing v1 as it was is refused as stale: that is why a rollback renumbers.
    stale = table.offer(ADAPTER_PARAM, v1.to_json())
    assert isinstance(stale, Rejected) and stale.reason == "stale_version"
    back = rollback_record(v1, held=2, dim=DIM, model="hashing", created_at=clock.now)
    accepted = table.offer(ADAPTER_PARAM, back.to_json())
    assert not isinstance(accepted, Rejected) and accepted is not None
    assert accepted.version == 3 and accepted.meta["rollback_of"] == 1
    assert np.array_equal(accepted.values, v1.values)
    off = rollback_record(None, held=3, dim=DIM, model="hashing", created_at=clock.now)
    assert weights_of(off).is_identity and off.version == 4
    # The trainer continues from a rollback and numbers after it.
    trainer.resume(accepted)
    assert trainer.version == 3
    np.testing.assert_array_equal(
        trainer.online.trainer.weights(encoder="hashing", version=3).matrix, v1.values
    )


def test_a_worker_swaps_between_batches_and_says_which_version() -> None:
    """Trainer records fed to a broker-free Worker: the version is used for the next
    batch, named in every recommendation record and in /metrics; a version the engine
    refuses leaves the last good one; a tombstone returns to the identity."""
    from prometheus_client import CollectorRegistry

    from consumers.testing import MemorySink
    from consumers.worker import Worker
    from interest_core.records import parse_recommendation

    clock = Clock()
    trainer = make_trainer(clock)
    trainer.learn_records(event_records(200))
    clock.now += 31
    record = trainer.train_round()
    assert record is not None
    worker_settings = settings().replace(encoder={"backend": "hashing", "model_name": "hashing"})
    worker = Worker(
        worker_settings,
        HashingEncoder(dim=DIM),
        worker_id="w",
        registry=CollectorRegistry(),
    )
    worker.apply_catalog_records(catalog_records())
    registry = worker.metrics.registry

    def version_metric() -> float | None:
        return registry.get_sample_value("interest_param_version", {"name": ADAPTER_PARAM})

    def published(batch: list[InputRecord]) -> list[int | None]:
        sink = MemorySink()
        worker.handle(batch, sink)
        recs = [
            parse_recommendation(r.value) for r in sink.on(worker_settings.topics.recommendations)
        ]
        return [getattr(r, "model_version", "bad") for r in recs]

    events = event_records(40, start=500)
    assert set(published(events[:20])) == {0}
    table = ParamTable([adapter_spec(DIM, worker.engine.model_name)])
    accepted = table.offer(ADAPTER_PARAM, record.to_json())
    assert accepted is not None and not isinstance(accepted, Rejected)
    worker.layer.apply([accepted], table.get(ADAPTER_PARAM))
    assert worker.layer.finish(wait=True)
    assert worker.engine.space.version == 1 and version_metric() == 1
    assert set(published(events[20:40])) == {1}
    # Parses as a record, but the engine refuses entries this large: v1 stays.
    from interest_core.params import encode_params

    huge = encode_params(
        ADAPTER_PARAM, np.eye(DIM) * 1e5, version=2, created_at=0.0, model="hashing"
    )
    worker.layer.apply([huge], huge)
    assert worker.engine.space.version == 1 and version_metric() == 1
    assert (
        registry.get_sample_value("interest_model_records_total", {"outcome": "refused_by_engine"})
        == 1
    )
    # A tombstone: the table forgets the name, the worker returns to the identity.
    table.offer(ADAPTER_PARAM, None)
    worker.layer.apply([], table.get(ADAPTER_PARAM))
    assert worker.layer.finish(wait=True)
    assert worker.engine.space.version == 0 and worker.engine.space.adapter.is_identity
    assert version_metric() == 0


def test_the_replica_is_bounded_by_max_users() -> None:
    clock = Clock()
    engine = Engine(HashingEncoder(dim=DIM), settings(), strategy="dynamic")
    bounded = settings().replace(state={"max_users": 50})
    trainer = Trainer(bounded, engine, clock=clock)
    trainer.apply_catalog_records(catalog_records())
    trainer.learn_records(event_records(120))
    assert engine.users_held == 50
    assert trainer.online.new_examples == 120  # each user's example was taken first
