"""Kafka clients built from the settings, security (SASL/TLS) passed through.

The one place that turns :class:`~interest_core.settings.KafkaSettings` into
kafka-python keyword arguments, so producers, consumers and the admin client agree.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from interest_core.settings import KafkaSettings, Settings

__all__ = [
    "client_kwargs",
    "describe_kafka_error",
    "is_unreachable",
    "make_admin",
    "make_consumer",
    "make_producer",
]

log = logging.getLogger(__name__)


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python connection keyword arguments common to every client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
        "retry_backoff_ms": kafka.retry_backoff_ms,
        "reconnect_backoff_max_ms": kafka.reconnect_backoff_max_ms,
        "bootstrap_timeout_ms": kafka.bootstrap_timeout_ms,
    }
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = kafka.sasl_plain_username
        kwargs["sasl_plain_password"] = kafka.sasl_plain_password
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(kafka, name):
            kwargs[name] = getattr(kafka, name)
    return kwargs


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says no broker could be reached (as opposed to a refused request)."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    if isinstance(exc, KafkaConnectionError):
        return True
    return isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower()


def describe_kafka_error(settings: Settings, exc: BaseException) -> str:
    """One line for a user: what failed, where, and for an unreachable cluster what to do."""
    servers = settings.kafka.bootstrap_servers
    if is_unreachable(exc):
        return (
            f"cannot reach Kafka at {servers} ({exc}). "
            "For a local broker run `interest broker` in another terminal; for another "
            "cluster set INTEREST__KAFKA__BOOTSTRAP_SERVERS=host:port "
            "(or kafka.bootstrap_servers in the --config file)"
        )
    return f"Kafka error at {servers}: {exc}"


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and retries (idempotent where allowed),
    its batches compressed with ``kafka.compression_type``."""
    kwargs: dict[str, Any] = client_kwargs(settings.kafka)
    codec = settings.kafka.compression_type
    kwargs.update(
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=5,
        retries=2**31 - 1,
        max_in_flight_requests_per_connection=5,
        enable_idempotence=True,
        delivery_timeout_ms=120_000,
    )
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def make_consumer(
    settings: Settings, *topics: str, background: bool = False, **overrides: Any
) -> KafkaConsumer:
    """A consumer with the configured timeouts; pass ``group_id=None`` for a group-less
    reader. A ``background`` reader (one whose freshness is counted in seconds: the
    followers, the item aggregation, the trainer) waits up to
    ``consumer.background_fetch_max_wait_ms`` on the broker for data instead of
    ``consumer.fetch_max_wait_ms``: an idle reader then sends a few fetches a second
    instead of a hundred."""
    c = settings.consumer
    kwargs: dict[str, Any] = client_kwargs(settings.kafka)
    kwargs.update(
        session_timeout_ms=c.session_timeout_ms,
        heartbeat_interval_ms=c.heartbeat_interval_ms,
        max_poll_interval_ms=c.max_poll_interval_ms,
        fetch_max_bytes=c.fetch_max_bytes,
        max_partition_fetch_bytes=c.max_partition_fetch_bytes,
        fetch_max_wait_ms=c.background_fetch_max_wait_ms if background else c.fetch_max_wait_ms,
    )
    kwargs.update(overrides)
    return KafkaConsumer(*topics, **kwargs)


def make_admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    kwargs = client_kwargs(settings.kafka)
    kwargs.update(overrides)
    return KafkaAdminClient(**kwargs)
