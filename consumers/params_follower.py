"""Follows the compacted models topic: the last good version of every learned parameter.

Every worker (and the trainer) reads ``interest.models`` whole, from the beginning and
then live (:class:`~consumers.topic_follower.TopicFollower`), and feeds each record to a
pure :class:`~interest_core.params.ParamTable`, which keeps the last good version per
name. A malformed, stale or mismatched record (wrong shape, wrong encoder, NaN, bad
checksum...) is refused with a machine-readable reason, logged, counted in the metrics
and otherwise ignored: the previous version stays in use and the follower carries on.

Publishing goes through :func:`publish_params`: keyed by the parameter name, so
compaction keeps the newest version of each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from consumers.topic_follower import TopicFollower
from interest_core.params import ParamRecord, ParamSpec, ParamTable
from interest_core.records import Rejected
from interest_core.settings import Settings
from producers.kafka_client import make_consumer, make_producer

__all__ = ["ParamsFollower", "ParamsHooks", "publish_params"]

log = logging.getLogger(__name__)


class ParamsHooks(Protocol):
    """What the follower reports (``consumers.metrics.WorkerMetrics`` implements it)."""

    def model_record(self, outcome: str) -> None:
        """One models-topic record: ``accepted``, ``tombstone`` or a rejection reason."""

    def param_in_use(self, name: str, version: int | None) -> None:
        """The version of ``name`` now in use (None: none, the default)."""


class ParamsFollower:
    """The models topic, followed; :attr:`table` holds the last good version per name.

    ``specs`` say what this process expects of each name (shape, model); ``hooks`` get
    the outcomes (metrics). :meth:`poll` returns the records accepted by that call, in
    order, so the caller can apply them on its own thread.
    """

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[ParamSpec] = (),
        *,
        hooks: ParamsHooks | None = None,
        consumer_factory: Callable[..., Any] = make_consumer,
        producer_factory: Callable[..., Any] = make_producer,
        barrier: bool = True,
    ) -> None:
        self.table = ParamTable(specs)
        self.hooks = hooks
        self._follower = TopicFollower(
            settings,
            settings.topics.models,
            role="models",
            consumer_factory=consumer_factory,
            producer_factory=producer_factory,
            barrier=barrier,
        )

    def start(self, timeout_s: float = 30.0) -> ParamsFollower:
        """Start reading from the beginning (raises ``RuntimeError`` if the topic is missing)."""
        self._follower.start(timeout_s)
        return self

    @property
    def caught_up(self) -> bool:
        """True once every record acknowledged before :meth:`start` has been read."""
        return self._follower.caught_up

    def poll(self, timeout_s: float = 0.0) -> list[ParamRecord]:
        """Read what arrived (waits up to ``timeout_s`` seconds); the accepted records."""
        accepted: list[ParamRecord] = []
        for record in self._follower.poll(timeout_s):
            key: str | None
            try:
                key = None if record.key is None else record.key.decode("utf-8")
            except UnicodeDecodeError:
                self._outcome("bad_key", None)
                log.warning("models record at %s refused: key is not UTF-8", record.source)
                continue
            if key is None:
                self._outcome("missing_key", None)
                log.warning("models record at %s refused: no key", record.source)
                continue
            outcome = self.table.offer(key, record.value)
            if outcome is None:
                self._outcome("tombstone", key)
            elif isinstance(outcome, Rejected):
                self._outcome(outcome.reason, None)
                log.warning(
                    "models record %r at %s refused: %s (%s)",
                    key,
                    record.source,
                    outcome.reason,
                    outcome.detail,
                )
            else:
                accepted.append(outcome)
                self._outcome("accepted", key)
        return accepted

    def _outcome(self, outcome: str, name: str | None) -> None:
        if self.hooks is None:
            return
        self.hooks.model_record(outcome)
        if name is not None:
            held = self.table.get(name)
            self.hooks.param_in_use(name, None if held is None else held.version)

    def get(self, name: str) -> ParamRecord | None:
        """The last good version of ``name`` (None when none was accepted)."""
        return self.table.get(name)

    def close(self) -> None:
        """Close the consumer (idempotent)."""
        self._follower.close()


def publish_params(producer: Any, topic: str, record: ParamRecord, timeout_s: float = 10.0) -> int:
    """Send ``record`` keyed by its name and wait for the acknowledgement; returns its
    offset. Raises kafka-python's ``KafkaError`` when it is not acknowledged in time."""
    future = producer.send(topic, key=record.name.encode("utf-8"), value=record.to_json())
    return int(future.get(timeout=timeout_s).offset)
