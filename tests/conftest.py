"""Shared fixtures: the embedded broker (started by the tests themselves) and settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from interest_core.settings import Settings
from producers.broker import EmbeddedBroker, free_port


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the test session, on a free port."""
    with EmbeddedBroker("127.0.0.1", free_port()) as running:
        yield running


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> Settings:
    """Settings pointing at the session broker, with fresh topic names and consumer groups
    (workers', the item aggregation's) per test."""
    suffix = uuid.uuid4().hex[:8]
    return Settings().replace(
        kafka={"bootstrap_servers": broker.bootstrap_servers},
        topics={
            "events": f"t{suffix}.events",
            "catalog": f"t{suffix}.catalog",
            "recommendations": f"t{suffix}.recommendations",
            "deadletter": f"t{suffix}.deadletter",
            "state": f"t{suffix}.state",
            "item_signals": f"t{suffix}.item-signals",
            "items": f"t{suffix}.items",
            "models": f"t{suffix}.models",
            "events_partitions": 4,
            "recommendations_partitions": 4,
            "state_partitions": 4,
            "item_signals_partitions": 4,
            "items_partitions": 4,
        },
        consumer={
            "group_id": f"g{suffix}",
            "max_poll_interval_ms": 3000,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        # The item aggregation's group too: left at its default, every test's aggregators
        # (some killed with SIGKILL) were members of one group on the session broker, and a
        # test's aggregator could wait minutes for partitions.
        items={"group_id": f"a{suffix}"},
        metrics={"port": 0},
    )


@pytest.fixture(scope="session")
def real_encoder():  # type: ignore[no-untyped-def]
    """The bundled all-MiniLM-L6-v2, loaded once per test session (tests marked `model`)."""
    import torch

    from interest_core.encoder import encoder_from_settings
    from interest_core.settings import EncoderSettings

    torch.set_num_threads(2)
    return encoder_from_settings(EncoderSettings(device="cpu"))
