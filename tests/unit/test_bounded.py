"""Bounded publishing (consumers/bounded.py): every outgoing record fits the limits, and
a record that cannot be published is counted as poison and skipped, never fatal."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumers.bounded import (
    BoundedPublisher,
    PublishError,
    bound_dead_letter,
    record_bytes,
    trim_recommendation,
    trim_state,
)
from consumers.worker import MemorySink, OutgoingRecord
from interest_core.interest import RecentItem, UserState

LIMIT = 10_000
DL, STATE, RECS = "t.deadletter", "t.state", "t.recommendations"


class Hooks:
    def __init__(self) -> None:
        self.trims: Counter[str] = Counter()
        self.poison: Counter[str] = Counter()

    def trimmed(self, kind: str) -> None:
        self.trims[kind] += 1

    def poisoned(self, reason: str) -> None:
        self.poison[reason] += 1


def publisher(hooks: Hooks, max_bytes: int = LIMIT) -> BoundedPublisher:
    return BoundedPublisher(
        max_bytes=max_bytes,
        deadletter_topic=DL,
        state_topic=STATE,
        recommendations_topic=RECS,
        hooks=hooks,
    )


def dead_letter(key: bytes | None, value: bytes | None) -> OutgoingRecord:
    headers = (
        ("reason", b"text_too_long"),
        ("detail", b"2000000 characters > 2000"),
        ("source_topic", b"t.events"),
        ("source_partition", b"3"),
        ("source_offset", b"1234"),
        ("worker_id", b"w-1"),
    )
    return OutgoingRecord(DL, key, value, headers)


def big_state(items: int) -> bytes:
    state = UserState("u1", dim=8)
    for i in range(items):
        item = f"item-{i:06d}-" + "x" * 200
        state.remember_item(RecentItem(item, 1.0e9 + i, 1.0, "clicked"), 50, 100_000)
        state.mark_applied(f"e{i}", i, "click", 1.0e9 + i)
    return state.to_bytes()


def test_a_dead_letter_that_fits_is_published_whole() -> None:
    record = dead_letter(b"u1", b"x" * 1000)
    assert bound_dead_letter(record, LIMIT) is record


@hsettings(max_examples=60, deadline=None)
@given(
    key_len=st.one_of(st.none(), st.integers(0, 50_000)),
    value_len=st.one_of(st.none(), st.integers(0, 200_000)),
)
def test_a_dead_letter_always_fits_and_says_what_was_cut(
    key_len: int | None, value_len: int | None
) -> None:
    if key_len is None and value_len is None:
        return
    key = None if key_len is None else bytes(range(256)) * (key_len // 256) + b"k" * (key_len % 256)
    value = None if value_len is None else b"v" * value_len
    bounded = bound_dead_letter(dead_letter(key, value), LIMIT)
    assert record_bytes(bounded) <= LIMIT
    headers = dict(bounded.headers)
    for name in ("reason", "source_topic", "source_partition", "source_offset"):
        assert name in headers
    if bounded.value != value:
        assert value is not None and bounded.value is not None
        assert headers["truncated"] == b"1"
        assert value.startswith(bounded.value)  # a prefix of the original bytes
        assert int(headers["original_size"]) == len(value)
        assert headers["original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    if bounded.key != key:
        assert key is not None and bounded.key is not None
        assert key.startswith(bounded.key)
        assert int(headers["original_key_size"]) == len(key)
        assert headers["original_key_sha256"] == hashlib.sha256(key).hexdigest().encode()


def test_a_big_state_is_trimmed_oldest_first_and_still_loads() -> None:
    blob = big_state(400)  # 400 seen items of 212 bytes: ~100 KB
    limit = 40_000
    assert len(blob) > limit
    record = OutgoingRecord(STATE, b"u1", blob)
    trimmed, cut = trim_state(record, limit)
    assert cut
    assert record_bytes(trimmed) <= limit
    assert trimmed.value is not None
    before, after = UserState.from_bytes(blob), UserState.from_bytes(trimmed.value)
    assert after.last_offset == before.last_offset == 399  # replays are still detected
    assert after.counts == before.counts  # what was applied is not rewritten
    assert 0 < len(after.seen) < len(before.seen)
    assert list(after.seen) == list(before.seen)[-len(after.seen) :]  # the newest kept


def test_a_big_recommendation_keeps_its_best_items() -> None:
    items = [{"item_id": f"i{n}", "score": 1.0 - n / 1000, "reason": "r" * 300} for n in range(100)]
    body = {"user_id": "u1", "version": 3, "items": items, "interests": [], "model": "m"}
    record = OutgoingRecord(RECS, b"u1", orjson.dumps(body))
    trimmed, cut = trim_recommendation(record, LIMIT)
    assert cut and record_bytes(trimmed) <= LIMIT
    assert trimmed.value is not None
    kept = orjson.loads(trimmed.value)
    assert kept["version"] == 3
    assert [i["item_id"] for i in kept["items"]] == [f"i{n}" for n in range(len(kept["items"]))]
    assert kept["items"]


def test_deliver_bounds_every_record_and_counts_the_cuts() -> None:
    hooks = Hooks()
    sink = MemorySink(max_record_bytes=LIMIT)
    records = [
        dead_letter(b"u1", b"v" * 2_000_000),
        OutgoingRecord(STATE, b"u1", big_state(400)),
        OutgoingRecord(RECS, b"u1", orjson.dumps({"user_id": "u1", "items": []})),
    ]
    delivered = publisher(hooks).deliver(records, sink)
    assert len(delivered) == 3 and len(sink.records) == 3
    assert all(record_bytes(r) <= LIMIT for r in sink.records)
    assert hooks.trims == Counter({"deadletter": 1, "state": 1})
    assert not hooks.poison


def test_a_topic_with_a_smaller_limit_gets_smaller_records() -> None:
    # The broker's max.message.bytes is below the setting: the limit halves per retry.
    hooks = Hooks()
    sink = MemorySink(max_record_bytes=3000)
    delivered = publisher(hooks).deliver([dead_letter(b"u1", b"v" * 50_000)], sink)
    assert len(delivered) == 1 and record_bytes(sink.records[0]) <= 3000
    assert not hooks.poison


class RefusingSink(MemorySink):
    """Refuses every record of ``topic`` at flush with ``error``."""

    def __init__(self, topic: str, error: Exception) -> None:
        super().__init__()
        self.topic, self.error = topic, error
        self.tries = 0

    def flush(self) -> None:
        refused = [(r, self.error) for r in self._pending if r.topic == self.topic]
        self._pending = [r for r in self._pending if r.topic != self.topic]
        self.tries += bool(refused)
        super().flush()
        if refused:
            raise PublishError("refused", refused)


def test_a_dead_letter_that_keeps_failing_is_poison_and_skipped() -> None:
    hooks = Hooks()
    sink = RefusingSink(DL, KafkaConnectionError("dead-letter topic unreachable"))
    state = OutgoingRecord(STATE, b"u1", b"not a state, but small")
    delivered = publisher(hooks).deliver([dead_letter(b"u1", b"{}"), state], sink)
    assert delivered == [state]
    assert sink.on(STATE) == [state]
    assert hooks.poison == Counter({"text_too_long": 1})
    assert sink.tries == 4  # the first send and 3 retries: bounded


def test_a_state_refused_for_size_is_poison_but_a_broker_outage_fails_the_batch() -> None:
    hooks = Hooks()
    sink = RefusingSink(STATE, MessageSizeTooLargeError("too big"))
    assert publisher(hooks).deliver([OutgoingRecord(STATE, b"u1", b"s")], sink) == []
    assert hooks.poison == Counter({"state_too_large": 1})

    outage = RefusingSink(RECS, KafkaConnectionError("broker down"))
    with pytest.raises(PublishError):
        publisher(Hooks()).deliver([OutgoingRecord(RECS, b"u1", b"{}")], outage)


def test_a_tiny_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        publisher(Hooks(), max_bytes=100)
