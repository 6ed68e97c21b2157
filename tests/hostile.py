"""Hostile records for the events topic: malformed, oversized, wrongly typed, unicode
garbage, null-laden and wrong-topic, each with the key and value bytes to send as is.

Every record here breaks the contract, so a worker must dead-letter each one and go on.
Most are rejected by the parser (``interest_core.records.parse_event``); two kinds only
the worker or the engine can reject: ``null_value`` (a Kafka tombstone on the events
topic, no bytes to parse) and ``unknown_item`` (well-formed, but naming an item the
catalog does not hold). Deterministic for a given seed.

:func:`kafka_layer_records` adds what only the Kafka layer carries: values over the
producer's default ``max_request_size`` (1 MiB), keys of 100 KB and more, null keys,
binary and duplicate headers (on hostile and on valid events), records of the other
topics' schemas (a user state), numbers out of any sane range and deeply nested
objects; the test sends them in batches compressed with each codec kafka-python has.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from interest_core.interest import UserState

__all__ = [
    "KAFKA_KINDS",
    "KINDS",
    "HostileRecord",
    "KafkaRecord",
    "hostile_records",
    "interleave",
    "kafka_layer_records",
    "odd_headers",
]

T = TypeVar("T")

_TS = 1_700_000_000.0
_EMOJI = "😀🔥👩‍👩‍👧‍👦🏳️‍🌈🇺🇳💩🧠"
_RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
_GARBAGE_TEXT = "\u202e\u2066\u200b\ufeff\u0000\u0007\x1b[31m"


@dataclass(frozen=True, slots=True)
class HostileRecord:
    """One record to send to the events topic, bytes untouched.

    ``kind`` names how it is hostile; ``parser_rejects`` is False for the kinds the
    parser cannot see (``null_value``, ``unknown_item``).
    """

    kind: str
    key: bytes | None
    value: bytes | None
    parser_rejects: bool = True


class _Maker:
    def __init__(
        self,
        rng: random.Random,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        max_record_bytes: int,
        max_text_chars: int,
    ) -> None:
        self.rng = rng
        self.user_ids = list(user_ids) or ["u-hostile"]
        self.item_ids = list(item_ids) or ["i-hostile"]
        self.max_record_bytes = max_record_bytes
        self.max_text_chars = max_text_chars
        self.serial = 0

    # -- helpers

    def event(self, **fields: Any) -> dict[str, Any]:
        """A valid click event (to be broken by the caller)."""
        self.serial += 1
        base: dict[str, Any] = {
            "event_id": f"hostile-{self.serial}",
            "user_id": self.rng.choice(self.user_ids),
            "ts": _TS + self.serial,
            "type": "click",
            "item_id": self.rng.choice(self.item_ids),
            "text": None,
            "rating": None,
            "context": {"device": "mobile"},
        }
        base.update(fields)
        return base

    def key(self) -> bytes | None:
        """Keys as hostile as the values: none, garbage bytes, a real user's, a long one."""
        roll = self.rng.random()
        if roll < 0.25:
            return None
        if roll < 0.45:
            return self.rng.randbytes(self.rng.randint(1, 24))
        if roll < 0.5:
            return ("k" * 1000).encode()
        return self.rng.choice(self.user_ids).encode("utf-8")

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    # -- kinds: each returns (key, value)

    def garbage_bytes(self) -> tuple[bytes | None, bytes | None]:
        # Starts with a byte that cannot open a JSON object, so it never parses as one.
        return self.key(), b"\xff" + self.rng.randbytes(self.rng.randint(0, 300))

    def truncated_json(self) -> tuple[bytes | None, bytes | None]:
        whole = self.dumps(self.event())
        # Any proper prefix of a JSON object is invalid JSON.
        return self.key(), whole[: self.rng.randint(1, len(whole) - 1)]

    def empty_value(self) -> tuple[bytes | None, bytes | None]:
        return self.key(), b""

    def invalid_utf8(self) -> tuple[bytes | None, bytes | None]:
        bad = self.rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xa0\xa1", b"\xed\xa0\x80", b"\xf8\x88"])
        field = self.rng.choice([b"user_id", b"text", b"item_id", b"type"])
        body = self.dumps(self.event(type="search", item_id=None, text="PLACEHOLDER"))
        value = body.replace(b'"PLACEHOLDER"', b'"ok"')
        value = value.replace(b'"' + field + b'":"', b'"' + field + b'":"' + bad, 1)
        if bad not in value:  # the field was null: put the bad bytes in a string anyway
            value = value.replace(b'"type":"', b'"type":"' + bad, 1)
        return self.key(), value

    def lone_surrogate(self) -> tuple[bytes | None, bytes | None]:
        # A JSON \\uD800 escape with no low surrogate after it.
        field = self.rng.choice(["text", "user_id", "event_id"])
        fields: dict[str, Any] = {"type": "search", "item_id": None, "text": "ok", field: "SURR"}
        body = self.dumps(self.event(**fields))
        return self.key(), body.replace(b"SURR", b"abc\\ud800def")

    def control_chars_id(self) -> tuple[bytes | None, bytes | None]:
        name = self.rng.choice(["user_id", "item_id", "event_id"])
        bad = "u" + self.rng.choice(["\u0000", "\u0007", "\u001b[2J", "\n", "\u007f"]) + "1"
        return self.key(), self.dumps(self.event(**{name: bad}))

    def rtl_override_id(self) -> tuple[bytes | None, bytes | None]:
        name = self.rng.choice(["user_id", "item_id", "event_id"])
        bad = self.rng.choice([_RTL + "1u", "u\u2066x", "\u200bu", "u\ufeff"])
        return self.key(), self.dumps(self.event(**{name: bad}))

    def huge_emoji_text(self) -> tuple[bytes | None, bytes | None]:
        count = self.max_text_chars // 2 + self.rng.randint(1, 400)
        text = (_EMOJI * count)[: self.max_text_chars + self.rng.randint(1, 2000)]
        kind = self.rng.choice(["search", "chat", "review"])
        fields: dict[str, Any] = {"type": kind, "text": text}
        if kind != "review":
            fields["item_id"] = None
        return self.key(), self.dumps(self.event(**fields))

    def text_too_long(self) -> tuple[bytes | None, bytes | None]:
        text = _GARBAGE_TEXT + "x" * (self.max_text_chars + 1)
        return self.key(), self.dumps(self.event(type="search", item_id=None, text=text))

    def oversized(self) -> tuple[bytes | None, bytes | None]:
        pad = "p" * (self.max_record_bytes + self.rng.randint(1, 4096))
        return self.key(), self.dumps(self.event(context={"pad": pad}))

    def deep_nesting(self) -> tuple[bytes | None, bytes | None]:
        depth = self.rng.randint(2000, 5000)
        return self.key(), b'{"user_id":' + b"[" * depth + b"]" * depth + b"}"

    def wrong_type(self) -> tuple[bytes | None, bytes | None]:
        choices: list[dict[str, Any]] = [
            {"user_id": {"id": 1}},
            {"user_id": [1, 2]},
            {"user_id": True},
            {"user_id": 1.5},
            {"user_id": ""},
            {"user_id": "   "},
            {"ts": [1]},
            {"ts": {"at": 1}},
            {"ts": True},
            {"ts": "yesterday"},
            {"ts": "2024-01-01T00:00:00"},  # no zone
            {"ts": -5},
            {"ts": 1e300},
            {"type": 5},
            {"type": ["click"]},
            {"type": "explode"},
            {"type": "CLICK"},
            {"item_id": []},
            {"item_id": {"x": 1}},
            {"item_id": False},
            {"type": "rate", "rating": "5"},
            {"type": "rate", "rating": 7},
            {"type": "rate", "rating": -1},
            {"type": "rate", "rating": True},
            {"context": [1, 2]},
            {"context": {"nested": {"a": 1}}},
            {"context": {"flag": True}},
            {"context": {f"k{i}": i for i in range(40)}},
            {"event_id": {"id": 1}},
            {"event_id": False},
            {"text": 42},
            {"text": ["a"]},
        ]
        return self.key(), self.dumps(self.event(**self.rng.choice(choices)))

    def null_fields(self) -> tuple[bytes | None, bytes | None]:
        choices: list[dict[str, Any]] = [
            {"user_id": None},
            {"ts": None},
            {"type": None},
            {"item_id": None},  # a click needs one
            {"type": "search", "item_id": None, "text": None},
            {"type": "chat", "item_id": None, "text": "   "},
            {"type": "rate", "rating": None},
            {"user_id": None, "ts": None, "type": None, "item_id": None, "event_id": None},
        ]
        return self.key(), self.dumps(self.event(**self.rng.choice(choices)))

    def null_value(self) -> tuple[bytes | None, bytes | None]:
        # A tombstone: Kafka clients refuse a record with neither key nor value.
        return self.key() or b"tombstone", None

    def json_not_object(self) -> tuple[bytes | None, bytes | None]:
        value = self.rng.choice(
            [b"null", b"[]", b"42", b'"a string"', b"true", b"[{}]", b"  null  ", b"1e999"]
        )
        return self.key(), value

    def wrong_topic_catalog(self) -> tuple[bytes | None, bytes | None]:
        item = self.rng.choice(self.item_ids)
        record = {
            "item_id": item,
            "title": "Shawshank Redemption, The (1994)",
            "description": "two men in prison",
            "category": "Drama",
            "tags": ["prison", "hope"],
            "image_caption": "a prison yard",
            "deleted": self.rng.random() < 0.2,
        }
        return item.encode(), self.dumps(record)

    def wrong_topic_recommendation(self) -> tuple[bytes | None, bytes | None]:
        user = self.rng.choice(self.user_ids)
        record = {
            "user_id": user,
            "version": self.rng.randint(1, 99),
            "event_ts": _TS,
            "published_at": _TS + 0.1,
            "trigger_event_id": "e-1",
            "items": [{"item_id": self.rng.choice(self.item_ids), "score": 0.8, "reason": "x"}],
            "interests": [{"label": "Drama", "weight": 0.4}],
            "intent": {"label": "browse", "confidence": 0.7},
            "model": "all-MiniLM-L6-v2",
        }
        return user.encode(), self.dumps(record)

    def unknown_item(self) -> tuple[bytes | None, bytes | None]:
        kind = self.rng.choice(["view", "click", "purchase", "skip"])
        user = self.rng.choice(self.user_ids)
        missing = f"no-such-item-{self.rng.randint(0, 10**9)}"
        return user.encode(), self.dumps(self.event(user_id=user, type=kind, item_id=missing))


#: kind -> relative weight. Oversized records are rarer: they cost bandwidth, not coverage.
_WEIGHTS: dict[str, float] = {
    "garbage_bytes": 1.0,
    "truncated_json": 1.0,
    "empty_value": 0.3,
    "invalid_utf8": 1.0,
    "lone_surrogate": 1.0,
    "control_chars_id": 1.0,
    "rtl_override_id": 1.0,
    "huge_emoji_text": 0.5,
    "text_too_long": 0.3,
    "oversized": 0.1,
    "deep_nesting": 0.2,
    "wrong_type": 2.0,
    "null_fields": 1.0,
    "null_value": 0.5,
    "json_not_object": 0.5,
    "wrong_topic_catalog": 0.5,
    "wrong_topic_recommendation": 0.5,
    "unknown_item": 0.5,
}
#: Every kind of hostile record :func:`hostile_records` makes.
KINDS: tuple[str, ...] = tuple(_WEIGHTS)
_NOT_FOR_PARSER = frozenset({"null_value", "unknown_item"})


def hostile_records(
    n: int,
    *,
    seed: int = 0,
    user_ids: Sequence[str] = (),
    item_ids: Sequence[str] = (),
    kinds: Sequence[str] = KINDS,
    max_record_bytes: int = 65536,
    max_text_chars: int = 2000,
) -> list[HostileRecord]:
    """``n`` hostile records (every kind in ``kinds`` at least once when ``n`` allows).

    ``user_ids`` / ``item_ids`` are real ids to borrow, so hostile records share keys
    and partitions with valid traffic; ``max_record_bytes`` and ``max_text_chars`` are
    the limits the worker enforces (bytes, characters), so the oversized kinds exceed
    them. Deterministic for a given ``seed``.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown hostile kinds: {sorted(unknown)}")
    rng = random.Random(seed)
    maker = _Maker(rng, user_ids, item_ids, max_record_bytes, max_text_chars)
    chosen = list(kinds)[:n]
    weights = [_WEIGHTS[k] for k in kinds]
    chosen += rng.choices(list(kinds), weights=weights, k=max(0, n - len(chosen)))
    rng.shuffle(chosen)
    out: list[HostileRecord] = []
    for kind in chosen:
        make: Callable[[], tuple[bytes | None, bytes | None]] = getattr(maker, kind)
        key, value = make()
        out.append(HostileRecord(kind, key, value, kind not in _NOT_FOR_PARSER))
    return out


def interleave(valid: Sequence[T], hostile: Sequence[T], *, seed: int = 0) -> list[T]:
    """``valid`` in its own order with ``hostile`` scattered at random places between."""
    rng = random.Random(seed)
    slots = sorted(rng.randint(0, len(valid)) for _ in hostile)
    out: list[T] = []
    h = 0
    for index, record in enumerate(valid):
        while h < len(hostile) and slots[h] == index:
            out.append(hostile[h])
            h += 1
        out.append(record)
    out.extend(hostile[h:])
    return out


# --------------------------------------------------------------------------- Kafka layer


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A hostile record for the events topic with what only the Kafka layer carries."""

    kind: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


#: Every kind :func:`kafka_layer_records` makes.
KAFKA_KINDS: tuple[str, ...] = (
    "over_request_size",
    "key_100kb",
    "giant_key_and_value",
    "null_key",
    "binary_duplicate_headers",
    "wrong_topic_state",
    "absurd_numbers",
    "deep_object",
)


def _absurd_numbers(rng: random.Random, event: dict[str, Any]) -> bytes:
    """An event whose numbers are out of any sane range (raw JSON: orjson would refuse
    to write some of them)."""
    body = orjson.dumps({k: v for k, v in event.items() if k not in {"ts", "rating"}})
    field, number = rng.choice(
        [
            ("ts", b"1e308"),
            ("ts", b"-1e308"),
            ("ts", b"99999999999999999999999999999999"),
            ("ts", b"-9223372036854775808"),
            ("ts", b"NaN"),
            ("ts", b"Infinity"),
            ("ts", b"1e999"),
            ("rating", b"1e308"),
            ("rating", b"-1e-320"),
            ("rating", b"5.000000000000001"),
            ("rating", b"18446744073709551616"),
        ]
    )
    if field == "rating":
        body = body.replace(b'"type":"click"', b'"type":"rate"')
        return body[:-1] + b',"ts":1700000000.0,"rating":' + number + b"}"
    return body[:-1] + b',"ts":' + number + b"}"


def odd_headers(rng: random.Random) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers no one expects: binary values, a repeated name, an empty name, a
    bidi-override name, a 10 KB value. The worker must ignore them (valid events carrying
    them are applied)."""
    return (
        ("trace", rng.randbytes(rng.randint(0, 64))),
        ("trace", b"duplicate name"),
        ("", b"\x00\xff"),
        ("\u202eevil", rng.randbytes(8)),
        ("big", rng.randbytes(10_000)),
    )


def kafka_layer_records(
    n_each: int,
    *,
    seed: int = 0,
    user_ids: Sequence[str] = (),
    item_ids: Sequence[str] = (),
    max_record_bytes: int = 65536,
    max_text_chars: int = 2000,
    oversized_bytes: int = 3_000_000,
) -> list[KafkaRecord]:
    """``n_each`` records of every kind in :data:`KAFKA_KINDS` (shuffled).

    ``oversized_bytes`` is the size of the values meant to exceed the producer's
    default request size (bytes). Deterministic for a given ``seed``.
    """
    rng = random.Random(seed)
    maker = _Maker(rng, user_ids, item_ids, max_record_bytes, max_text_chars)
    small_kinds = [k for k in KINDS if k not in {"null_value", "unknown_item", "oversized"}]

    def bad_value() -> bytes:
        value = getattr(maker, rng.choice(small_kinds))()[1]
        assert value is not None
        return value

    out: list[KafkaRecord] = []
    for _ in range(n_each):
        user = rng.choice(maker.user_ids)
        text = "x" * oversized_bytes
        chat = maker.event(type="chat", item_id=None, text=text, user_id=user)
        out.append(KafkaRecord("over_request_size", user.encode(), maker.dumps(chat)))
        out.append(KafkaRecord("key_100kb", rng.randbytes(100_000), bad_value()))
        out.append(
            KafkaRecord(
                "giant_key_and_value",
                b"K" * (oversized_bytes // 2),
                maker.dumps(maker.event(context={"pad": "p" * (oversized_bytes // 2)})),
            )
        )
        out.append(KafkaRecord("null_key", None, bad_value()))
        out.append(
            KafkaRecord("binary_duplicate_headers", maker.key(), bad_value(), odd_headers(rng))
        )
        state = UserState(user, dim=8)
        state.mark_applied("e1", 1, "click", _TS)
        out.append(KafkaRecord("wrong_topic_state", user.encode(), state.to_bytes()))
        out.append(KafkaRecord("absurd_numbers", maker.key(), _absurd_numbers(rng, maker.event())))
        depth = rng.randint(100, 900)
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        deep = maker.dumps(maker.event())[:-1] + b',"context":' + nested + b"}"
        out.append(KafkaRecord("deep_object", maker.key(), deep))
    rng.shuffle(out)
    return out
