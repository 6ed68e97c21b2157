"""`topics create` on topics that already exist with other settings says so, and what it means."""

from __future__ import annotations

import pytest
from kafka.admin import NewTopic

from interest_core.settings import Settings
from producers.kafka_client import make_admin
from producers.topics import create_topics, missing_topic_warning

pytestmark = pytest.mark.integration


def test_an_existing_topic_with_fewer_partitions_is_reported(kafka_settings: Settings) -> None:
    events = kafka_settings.topics.events
    assert missing_topic_warning(kafka_settings, events) is not None
    admin = make_admin(kafka_settings)
    try:  # what a producer's auto-creation leaves behind: the broker's default count
        admin.create_topics([NewTopic(events, 2, 1)])
    finally:
        admin.close()
    assert missing_topic_warning(kafka_settings, events) is None
    warnings: list[str] = []
    outcome = create_topics(kafka_settings, warnings=warnings)
    assert outcome[events] == "exists"
    assert outcome[kafka_settings.topics.state] == "created"
    configured = kafka_settings.topics.events_partitions
    assert len(warnings) == 1, warnings
    assert f"topic {events} exists with 2 partitions, configured {configured}" in warnings[0]
    assert "at most 2 workers get events partitions" in warnings[0]
    again: list[str] = []
    create_topics(kafka_settings, warnings=again)
    assert again == warnings  # idempotent, and still says so
