"""Every record a worker publishes fits the limits, so no input record can stop a partition.

A producer refuses a record bigger than its ``max_request_size``, a broker one bigger
than the topic's ``max.message.bytes``; either used to end the worker, and the record
that caused it was read again at every restart. Here every outgoing record is bounded to
``limits.max_publish_bytes`` (key + value + header bytes) before it is sent:

* a **dead letter** too big to publish whole carries a prefix of the original value
  (and of the key, when the key alone takes more than half the room), plus headers
  ``truncated=1``, ``original_size``, ``original_sha256`` (and ``original_key_size``,
  ``original_key_sha256`` when the key was cut) next to the usual reason and source
  topic/partition/offset;
* a **user state** too big is trimmed, oldest first: the seen-items set, then the recent
  items, then the remembered event ids (the last applied offset, which is what detects
  replays, is always kept), then the readable labels (weakest first);
* a **recommendation** too big keeps its best-ranked items (the tail is dropped), then
  its strongest interests.

Each trim is counted (``interest_records_trimmed_total{kind}``). Records the sink still
refuses are retried up to ``retries`` times, the limit halved at each try when the
refusal was about size. A dead letter that still fails is logged with its source
coordinates, counted in ``interest_poison_records_total{reason}`` and skipped; so is a
state or recommendation refused for its size. Any other failure of a state or
recommendation (the broker is down) raises :class:`PublishError`: the batch is not
committed and will be read again, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import orjson
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from interest_core.interest import StateFormatError, UserState

__all__ = [
    "BoundedPublisher",
    "Delivery",
    "PublishError",
    "PublishHooks",
    "bound_dead_letter",
    "is_size_refusal",
    "record_bytes",
    "trim_recommendation",
    "trim_state",
]

log = logging.getLogger(__name__)

#: Bytes reserved for the headers a truncated dead letter gains.
_TRUNCATION_HEADERS_BYTES = 256
#: Tries after the first send of a record the sink refused.
DEFAULT_RETRIES = 3


class OutgoingLike(Protocol):
    """What this module needs of an outgoing record (``consumers.worker.OutgoingRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]: ...


R = TypeVar("R", bound=OutgoingLike)


class PublishError(RuntimeError):
    """The sink could not deliver some records; offsets must not be committed.

    ``failed`` lists each refused record with its error, when the sink knows them.
    """

    def __init__(self, message: str, failed: Sequence[tuple[Any, BaseException]] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


class PublishHooks(Protocol):
    """Metrics hooks (``consumers.metrics.WorkerMetrics`` has them)."""

    def trimmed(self, kind: str) -> None: ...

    def poisoned(self, reason: str) -> None: ...


def record_bytes(record: OutgoingLike) -> int:
    """Key + value + header bytes of ``record`` (what the size limits are about)."""
    size = len(record.key or b"") + len(record.value or b"")
    return size + sum(len(name.encode()) + len(value) for name, value in record.headers)


def is_size_refusal(error: BaseException) -> bool:
    """True when ``error`` says the record (or its batch) was too large."""
    return isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError)


def _header(record: OutgoingLike, name: str) -> str:
    for key, value in record.headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return "?"


def bound_dead_letter(record: R, max_bytes: int) -> R:
    """``record`` if it fits ``max_bytes``, else a copy with a prefix of its value (and
    key) and headers saying what was cut: sizes in bytes, SHA-256 of the originals."""
    if record_bytes(record) <= max_bytes:
        return record
    key = record.key or b""
    value = record.value or b""
    header_bytes = sum(len(n.encode()) + len(v) for n, v in record.headers)
    room = max(0, max_bytes - header_bytes - _TRUNCATION_HEADERS_BYTES)
    extra: list[tuple[str, bytes]] = [("truncated", b"1")]
    new_key: bytes | None = record.key
    if len(key) > room // 2 and len(key) + len(value) > room:
        new_key = key[: room // 2]
        extra += [
            ("original_key_size", str(len(key)).encode()),
            ("original_key_sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
    new_value: bytes | None = record.value
    if record.value is not None:
        keep = max(0, room - len(new_key or b""))
        new_value = value[:keep]
        extra += [
            ("original_size", str(len(value)).encode()),
            ("original_sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
    return dataclasses.replace(  # type: ignore[type-var]
        record, key=new_key, value=new_value, headers=(*record.headers, *extra)
    )


def trim_state(record: R, max_bytes: int) -> tuple[R, bool]:
    """``record`` (a user state) trimmed to ``max_bytes``, oldest history first; and
    whether anything was trimmed. A value that is not a user state is left as is."""
    if record.value is None or record_bytes(record) <= max_bytes:
        return record, False
    try:
        state = UserState.from_bytes(record.value)
    except StateFormatError:
        return record, False
    overhead = record_bytes(record) - len(record.value)
    blob = record.value
    steps = 0
    while overhead + len(blob) > max_bytes and steps < 200:
        steps += 1
        if state.seen:
            for item_id in list(state.seen)[: max(1, len(state.seen) // 2)]:
                del state.seen[item_id]
        elif state.recent:
            for _ in range(max(1, len(state.recent) // 2)):
                state.recent.popleft()
        elif len(state.event_ids) > 1:
            for _ in range(max(1, len(state.event_ids) // 2)):
                state.event_ids.popleft()
        elif state.labels:
            strongest = sorted(state.labels.items(), key=lambda kv: -kv[1])
            state.labels = dict(strongest[: len(strongest) // 2])
        else:
            break
        blob = state.to_bytes()
    return dataclasses.replace(record, value=blob), True  # type: ignore[type-var]


def trim_recommendation(record: R, max_bytes: int) -> tuple[R, bool]:
    """``record`` (a recommendation) trimmed to ``max_bytes``: lowest-ranked items
    first, then the weakest interests; and whether anything was trimmed."""
    if record.value is None or record_bytes(record) <= max_bytes:
        return record, False
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return record, False
    if not isinstance(body, dict):
        return record, False
    overhead = record_bytes(record) - len(record.value)
    value = record.value
    for field in ("items", "interests"):
        while overhead + len(value) > max_bytes and isinstance(body.get(field), list):
            entries = body[field]
            if not entries:
                break
            body[field] = entries[: len(entries) // 2]
            value = orjson.dumps(body)
    return dataclasses.replace(record, value=value), True  # type: ignore[type-var]


@dataclasses.dataclass
class Delivery(Generic[R]):
    """A batch's records handed to a sink and not yet acknowledged (see ``BoundedPublisher``)."""

    sent: list[R]
    refused: list[tuple[R, BaseException]]


class BoundedPublisher:
    """Sends a batch's records through a sink so that none of them can stop the partition.

    ``max_bytes`` bounds each record (key + value + headers); ``deadletter_topic`` and
    ``state_topic`` / ``recommendations_topic`` say which rule applies; ``hooks`` count
    trims and poison records; ``retries`` bounds the tries after a refusal.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        deadletter_topic: str,
        state_topic: str,
        recommendations_topic: str,
        hooks: PublishHooks,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {max_bytes}")
        self.max_bytes = max_bytes
        self.deadletter_topic = deadletter_topic
        self.state_topic = state_topic
        self.recommendations_topic = recommendations_topic
        self.hooks = hooks
        self.retries = retries

    def bound(self, record: R, max_bytes: int | None = None) -> R:
        """``record`` made to fit ``max_bytes`` (default: the publisher's) by its topic's rule."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if record.topic == self.deadletter_topic:
            bounded = bound_dead_letter(record, limit)
            if bounded is not record:
                self.hooks.trimmed("deadletter")
            return bounded
        if record.topic == self.state_topic:
            bounded, trimmed = trim_state(record, limit)
            kind = "state"
        elif record.topic == self.recommendations_topic:
            bounded, trimmed = trim_recommendation(record, limit)
            kind = "recommendation"
        else:
            return record
        if trimmed:
            self.hooks.trimmed(kind)
        return bounded

    def deliver(self, records: Sequence[R], sink: Any) -> list[R]:
        """Send ``records`` (bounded) through ``sink`` and flush; returns those delivered.

        :meth:`send` then :meth:`complete`, for a caller that does not overlap batches.
        """
        return self.complete(self.send(records, sink), sink)

    def send(self, records: Sequence[R], sink: Any) -> Delivery[R]:
        """Bound ``records`` and hand them to ``sink`` without waiting for acknowledgements.

        The returned :class:`Delivery` is finished by :meth:`complete`, which may run
        after the next batch was processed (the worker's one-batch-deep pipeline).
        """
        sent, refused = self._hand_over([self.bound(r) for r in records], sink)
        return Delivery(sent, refused)

    def complete(self, delivery: Delivery[R], sink: Any) -> list[R]:
        """Wait for ``delivery``'s acknowledgements, retry refusals; returns those delivered.

        Raises :class:`PublishError` only when a state or recommendation record failed
        for a reason other than its size (the broker is unreachable): then nothing of
        the batch may be committed. Dead letters that cannot be delivered after the
        retries are logged, counted as poison and left out.
        """
        sent, failed = delivery.sent, delivery.refused + self._flush(delivery.sent, sink)
        delivered: list[R] = []
        attempt = 0
        while True:
            delivered += [r for r in sent if not any(r is f for f, _ in failed)]
            fatal = [
                (r, e)
                for r, e in failed
                if r.topic != self.deadletter_topic and not is_size_refusal(e)
            ]
            if fatal:
                record, error = fatal[0]
                raise PublishError(
                    f"{len(fatal)} records to {record.topic} not delivered: {error}", fatal
                )
            if not failed or attempt >= self.retries:
                break
            attempt += 1
            limit = max(1024, self.max_bytes >> attempt)
            retry = [self.bound(r, limit) if is_size_refusal(e) else r for r, e in failed]
            sent, refused = self._hand_over(retry, sink)
            failed = refused + self._flush(sent, sink)
        for record, error in failed:
            self._poison(record, error)
        return delivered

    @staticmethod
    def _hand_over(
        records: Sequence[R], sink: Any
    ) -> tuple[list[R], list[tuple[R, BaseException]]]:
        """Queue ``records`` on the sink; those it took, and those refused before the wire."""
        sent: list[R] = []
        refused: list[tuple[R, BaseException]] = []
        for record in records:
            try:
                sink.send(record)
                sent.append(record)
            except (KafkaError, ValueError, TypeError) as exc:  # refused before the wire
                refused.append((record, exc))
        return sent, refused

    @staticmethod
    def _flush(sent: Sequence[R], sink: Any) -> list[tuple[R, BaseException]]:
        """Flush the sink; the records of ``sent`` that it could not deliver, with the errors."""
        refused: list[tuple[R, BaseException]] = []
        try:
            sink.flush()
        except PublishError as exc:
            if not exc.failed:  # the sink cannot say which: all of them
                raise
            for record, error in exc.failed:
                mine = next((r for r in sent if r is record), None)
                if mine is None:  # not one of ours: the sink is confused, fail the batch
                    raise
                refused.append((mine, error))
        return refused

    def _poison(self, record: OutgoingLike, error: BaseException) -> None:
        if record.topic == self.deadletter_topic:
            reason = _header(record, "reason")
            log.error(
                "poison record skipped: dead letter for %s partition %s offset %s (reason %s,"
                " %d bytes) could not be published: %s",
                _header(record, "source_topic"),
                _header(record, "source_partition"),
                _header(record, "source_offset"),
                reason,
                record_bytes(record),
                error,
            )
        else:
            kind = "state" if record.topic == self.state_topic else "recommendation"
            reason = f"{kind}_too_large"
            key = (record.key or b"").decode("utf-8", "replace")[:80]
            log.error(
                "poison record skipped: %s of user %r (%d bytes) refused by %s: %s",
                kind,
                key,
                record_bytes(record),
                record.topic,
                error,
            )
        self.hooks.poisoned(reason)
