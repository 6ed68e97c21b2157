"""How long each reader lets the broker hold a fetch: the events consumer answers in
milliseconds, the readers whose freshness is counted in seconds wait longer, so that an
idle fleet does not send a hundred empty fetches a second per reader."""

from __future__ import annotations

from typing import Any

import pytest

import producers.kafka_client as kafka_client
from consumers.catalog_follower import CatalogFollower
from consumers.params_follower import ParamsFollower
from consumers.state_store import StateReader
from interest_core.settings import settings_from

SETTINGS = settings_from(
    {"consumer": {"fetch_max_wait_ms": 7, "background_fetch_max_wait_ms": 300}}
)


class _Made(Exception):
    """Raised by the recording factory: the reader asked for its consumer."""


def _asked(start: Any) -> dict[str, Any]:
    """The keyword arguments a reader passes to its consumer factory when it starts."""
    asked: dict[str, Any] = {}

    def factory(_settings: Any, *_topics: str, **kwargs: Any) -> Any:
        asked.update(kwargs)
        raise _Made

    with pytest.raises(_Made):
        start(factory)
    return asked


def test_make_consumer_takes_the_fetch_wait_of_its_role(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(kafka_client, "KafkaConsumer", lambda *_t, **kw: made.append(kw))
    kafka_client.make_consumer(SETTINGS, group_id=None)
    kafka_client.make_consumer(SETTINGS, group_id=None, background=True)
    kafka_client.make_consumer(SETTINGS, group_id=None, background=True, fetch_max_wait_ms=1)
    assert [kw["fetch_max_wait_ms"] for kw in made] == [7, 300, 1]
    assert all("background" not in kw for kw in made)  # not a kafka-python setting


def test_followers_read_in_the_background() -> None:
    catalog = _asked(lambda f: CatalogFollower(SETTINGS, consumer_factory=f).start())
    models = _asked(lambda f: ParamsFollower(SETTINGS, consumer_factory=f).start())
    assert catalog["background"] is True
    assert models["background"] is True


def test_a_state_restore_is_not_a_background_read() -> None:
    # A restore holds the partitions it restores: its last fetch must not wait long.
    asked = _asked(lambda f: StateReader(SETTINGS, consumer_factory=f).read([0]))
    assert not asked.get("background", False)
