"""``interest topics create``: the topics of the contract, idempotently."""

from __future__ import annotations

import argparse
import logging
import sys

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from interest_core.settings import Settings
from producers.kafka_client import make_admin

__all__ = ["create_topics", "topic_specs"]

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The contract's topics with the configured partitions; catalog, state, items and
    models are compacted (the latest record per key is what matters)."""
    t = settings.topics
    rf = t.replication_factor
    return [
        NewTopic(t.events, t.events_partitions, rf),
        NewTopic(t.catalog, t.catalog_partitions, rf, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(t.recommendations, t.recommendations_partitions, rf),
        NewTopic(t.deadletter, t.deadletter_partitions, rf),
        NewTopic(t.state, t.state_partitions, rf, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(t.item_signals, t.item_signals_partitions, rf),
        NewTopic(t.items, t.items_partitions, rf, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(t.models, t.models_partitions, rf, topic_configs={"cleanup.policy": "compact"}),
    ]


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every missing topic; returns ``{topic: "created" | "exists"}``.

    Running it twice is harmless. Raises :class:`kafka.errors.KafkaError` when the
    cluster cannot be reached.
    """
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        outcome: dict[str, str] = {}
        for spec in topic_specs(settings):
            if spec.name in existing:
                outcome[spec.name] = "exists"
                continue
            try:
                admin.create_topics([spec])
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:  # created by another process meanwhile
                outcome[spec.name] = "exists"
        return outcome
    finally:
        admin.close()


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create", help="create the topics with the configured partitions (idempotent)"
    )
    # Accept the common options after ACTION too (`topics create --config X`).
    create.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    create.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        outcome = create_topics(settings)
    except KafkaError as exc:
        print(
            f"interest topics create: cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return 1
    for name, what in outcome.items():
        print(f"{what:8s} {name}")
    return 0
