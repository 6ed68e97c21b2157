"""``interest topics create``: the topics of the contract, idempotently."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from interest_core.settings import Settings
from producers.kafka_client import describe_kafka_error, make_admin

__all__ = ["create_topics", "existing_topic_warnings", "missing_topic_warning", "topic_specs"]

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


def create_topics(settings: Settings, *, warnings: list[str] | None = None) -> dict[str, str]:
    """Create every missing topic; returns ``{topic: "created" | "exists"}``.

    Running it twice is harmless. A topic that exists with another partition count or
    cleanup policy than configured is kept as it is (Kafka cannot shrink a topic) and
    logged, with what it means, as a warning; pass a list as ``warnings`` to get those
    lines too. Raises :class:`kafka.errors.KafkaError` when the cluster cannot be reached.
    """
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        outcome: dict[str, str] = {}
        specs = topic_specs(settings)
        for spec in specs:
            if spec.name in existing:
                outcome[spec.name] = "exists"
                continue
            try:
                admin.create_topics([spec])
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:  # created by another process meanwhile
                outcome[spec.name] = "exists"
        found = existing_topic_warnings(admin, settings, [s for s in specs if s.name in existing])
        for line in found:
            log.warning("%s", line)
        if warnings is not None:
            warnings.extend(found)
        return outcome
    finally:
        admin.close()


def _consequence(settings: Settings, name: str, actual: int) -> str:
    t = settings.topics
    if name == t.events:
        return (
            f"at most {actual} workers get events partitions, the rest stand by; "
            f"the state topic should have {actual} partitions too"
        )
    if name == t.state:
        return (
            "a worker that takes over events partition p restores state partition p, so the "
            "state topic should have as many partitions as the events topic"
        )
    return "only the spread of the load changes"


def existing_topic_warnings(admin: Any, settings: Settings, specs: list[NewTopic]) -> list[str]:
    """One line per existing topic whose partitions or cleanup policy differ from ``specs``.

    The cleanup policy is checked only where the cluster reports it (the embedded broker
    reports no topic configs).
    """
    if not specs:
        return []
    out: list[str] = []
    try:
        described = {d["name"]: d for d in admin.describe_topics([s.name for s in specs])}
    except KafkaError as exc:
        return [f"could not check the existing topics: {exc}"]
    for spec in specs:
        actual = len(described.get(spec.name, {}).get("partitions") or [])
        if actual and actual != spec.num_partitions:
            out.append(
                f"topic {spec.name} exists with {actual} partitions, configured "
                f"{spec.num_partitions}: {_consequence(settings, spec.name, actual)}. Kafka "
                "cannot shrink a topic: recreate it (its records are lost) or set the "
                f"configured count to {actual}"
            )
    compacted = [s for s in specs if (s.topic_configs or {}).get("cleanup.policy") == "compact"]
    if compacted:
        try:
            from kafka.admin import ConfigResource, ConfigResourceType

            resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in compacted]
            reported = admin.describe_configs(resources)
        except Exception as exc:  # not every broker answers DescribeConfigs
            log.debug("describe_configs failed: %s", exc)
            reported = None
        for spec in compacted:
            policy = _cleanup_policy(reported, spec.name)
            if policy is not None and "compact" not in policy:
                out.append(
                    f"topic {spec.name} exists with cleanup.policy={policy}, configured compact: "
                    "records older than the retention are deleted instead of compacted, so "
                    "user states or catalog items can be lost; set cleanup.policy=compact on it"
                )
    return out


def _cleanup_policy(reported: Any, topic: str) -> str | None:
    """The cleanup.policy in a kafka-python describe_configs answer, if it is there."""
    if not isinstance(reported, dict):
        return None
    configs = (reported.get("topic") or {}).get(topic) or {}
    value = configs.get("cleanup.policy")
    if isinstance(value, dict):
        value = value.get("value")
    return str(value) if value is not None else None


def missing_topic_warning(settings: Settings, topic: str) -> str | None:
    """A warning when ``topic`` does not exist yet (a producer is about to write to it)."""
    admin = make_admin(settings)
    try:
        if topic in set(admin.list_topics()):
            return None
    finally:
        admin.close()
    return (
        f"topic {topic} does not exist: the broker may create it with its own defaults "
        "(the embedded broker: 4 partitions, not compacted), not the configured ones; "
        "run `interest topics create` first"
    )


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
    warnings: list[str] = []
    try:
        outcome = create_topics(settings, warnings=warnings)
    except KafkaError as exc:
        print(f"interest topics create: {describe_kafka_error(settings, exc)}", file=sys.stderr)
        return 1
    for name, what in outcome.items():
        print(f"{what:8s} {name}")
    for line in warnings:
        print(f"interest topics create: warning: {line}", file=sys.stderr)
    return 0
