"""The records of the contract (``../shared/CONTRACT.md``) as frozen, typed objects.

Each record type has one parser. A parser never raises on bad input: it returns either
the record or a :class:`Rejected` value carrying a machine-readable reason
(``missing_field:user_id``, ``bad_type:ts``, ``unknown_event_type``, ``text_too_long``,
``not_json``...), so bad records travel on an error path as values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

__all__ = [
    "EVENT_TYPES",
    "ITEM_EVENT_TYPES",
    "NEGATIVE_EVENT_TYPES",
    "POSITIVE_EVENT_TYPES",
    "POSITIVE_RATING",
    "TEXT_EVENT_TYPES",
    "USER_DELETION",
    "CatalogDeletion",
    "CatalogItem",
    "Event",
    "Intent",
    "InterestLabel",
    "Recommendation",
    "RecommendedItem",
    "Rejected",
    "UserDeletion",
    "parse_catalog",
    "parse_event",
    "parse_recommendation",
]

#: The event type that asks to forget a user (parsed into a :class:`UserDeletion`).
USER_DELETION = "delete_user"
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "view",
        "click",
        "add_to_cart",
        "purchase",
        "rate",
        "review",
        "search",
        "chat",
        "skip",
        "dislike",
        USER_DELETION,
    }
)
#: Event types that must name the item acted on.
ITEM_EVENT_TYPES: frozenset[str] = frozenset(
    {"view", "click", "add_to_cart", "purchase", "rate", "review", "skip", "dislike"}
)
#: Event types that must carry free text.
TEXT_EVENT_TYPES: frozenset[str] = frozenset({"search", "chat", "review"})
#: Event types that push interest away from the item.
NEGATIVE_EVENT_TYPES: frozenset[str] = frozenset({"skip", "dislike"})
#: Event types that count as a positive interaction in evaluation (plus rate >= 4).
POSITIVE_EVENT_TYPES: frozenset[str] = frozenset({"purchase", "add_to_cart", "click"})
#: A rating at or above this (on the contract's 0-5 scale) is a positive interaction.
POSITIVE_RATING = 4.0

DEFAULT_MAX_TEXT_CHARS = 2000
DEFAULT_MAX_RECORD_BYTES = 64 * 1024
_MAX_ID_CHARS = 256
_MAX_CONTEXT_KEYS = 32
# Integers beyond 64 bits cannot be written back as JSON by orjson (nor fit a float's range).
_MAX_SAFE_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that broke the contract.

    ``reason`` is machine-readable and stable (``missing_field:user_id``); ``detail`` is
    for people; ``raw`` is the original bytes, kept for the dead-letter topic.
    """

    reason: str
    detail: str
    raw: bytes = b""


@dataclass(slots=True)
class Event:
    """One user interaction, validated.

    ``ts`` is event time in unix seconds. ``event_id`` is the producer's id or, when the
    producer gave none, the ``topic/partition/offset`` it was read from.

    Treated as immutable, not frozen: a frozen dataclass sets its fields one by one
    through ``object.__setattr__`` (0.81 against 0.16 us here), and one is built for
    every event read. (It was never hashable: ``context`` is a dict.)
    """

    user_id: str
    ts: float
    type: str
    event_id: str
    item_id: str | None = None
    text: str | None = None
    rating: float | None = None
    context: Mapping[str, str | float | int] = field(default_factory=dict)
    #: Offset in its events partition when read from Kafka (None offline); a user's events
    #: live in one partition, so it orders them and detects replays after a crash.
    offset: int | None = None
    #: Its events partition when read from Kafka (None offline): with ``offset``, the
    #: event's identity in the item signals it gives rise to.
    partition: int | None = None

    def __post_init__(self) -> None:
        if self.type == USER_DELETION and not isinstance(self, UserDeletion):
            raise TypeError("a user deletion is a UserDeletion (UserDeletion.of), not an Event")

    @property
    def is_positive(self) -> bool:
        """True for the interactions the evaluation protocol counts as hits."""
        if self.type in POSITIVE_EVENT_TYPES:
            return True
        return self.type == "rate" and self.rating is not None and self.rating >= POSITIVE_RATING

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object for this event."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "ts": self.ts,
            "type": self.type,
            "item_id": self.item_id,
            "text": self.text,
            "rating": self.rating,
            "context": dict(self.context),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(slots=True)
class UserDeletion(Event):
    """A request to forget everything held about ``user_id`` (on the wire, an event of
    type ``delete_user``). It travels in the event stream, ordered with the user's other
    events; code tells it apart by type (``isinstance``), never by the type string."""

    @classmethod
    def of(
        cls, user_id: str, ts: float, event_id: str, *, offset: int | None = None
    ) -> UserDeletion:
        """A deletion of ``user_id`` at event time ``ts`` (unix seconds)."""
        return cls(user_id=user_id, ts=ts, type=USER_DELETION, event_id=event_id, offset=offset)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One catalog item. The encoder reads its text fields together (see ``item_text``)."""

    item_id: str
    title: str
    description: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    image_caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "tags": list(self.tags),
            "image_caption": self.image_caption,
            "deleted": False,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class CatalogDeletion:
    """A catalog record with ``"deleted": true`` or a null value (tombstone)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class InterestLabel:
    label: str
    weight: float


@dataclass(frozen=True, slots=True)
class Intent:
    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A user's refreshed recommendations, as published on the recommendations topic.

    ``version`` grows by one per publication for the user, so consumers can drop
    duplicates and stale records. ``event_ts`` is the event time of the newest event that
    triggered it; ``published_at`` is wall-clock unix seconds at publication.
    """

    user_id: str
    version: int
    event_ts: float
    published_at: float
    trigger_event_id: str
    items: tuple[RecommendedItem, ...]
    interests: tuple[InterestLabel, ...] = ()
    intent: Intent | None = None
    model: str = ""
    #: Version of the adaptation layer the ranking used (0: the encoder's own space;
    #: None: not stated, as in records from before the layer existed). Optional field.
    model_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "version": self.version,
            "event_ts": self.event_ts,
            "published_at": self.published_at,
            "trigger_event_id": self.trigger_event_id,
            "items": [
                {"item_id": i.item_id, "score": round(i.score, 6), "reason": i.reason}
                for i in self.items
            ],
            "interests": [{"label": i.label, "weight": round(i.weight, 6)} for i in self.interests],
            "intent": (
                None
                if self.intent is None
                else {"label": self.intent.label, "confidence": round(self.intent.confidence, 6)}
            ),
            "model": self.model,
            **({} if self.model_version is None else {"model_version": self.model_version}),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


# --------------------------------------------------------------------------- parsing


def _load_object(
    raw: bytes | str | Mapping[str, Any],
) -> tuple[dict[str, Any] | None, Rejected | None, bytes]:
    """Decode ``raw`` into a JSON object, or say why not."""
    if type(raw) is bytes:  # a Kafka record's value: no copy, no ABC check
        raw_bytes = raw
    elif isinstance(raw, Mapping):
        obj = dict(raw)
        return obj, None, b""
    else:
        raw_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    try:
        obj = orjson.loads(raw_bytes)
    except orjson.JSONDecodeError as exc:
        return None, Rejected("not_json", str(exc)[:200], raw_bytes), raw_bytes
    if not isinstance(obj, dict):
        return (
            None,
            Rejected("not_object", f"JSON {type(obj).__name__}, not an object", raw_bytes),
            raw_bytes,
        )
    return obj, None, raw_bytes


def _dump_raw(obj: Mapping[str, Any]) -> bytes:
    """Bytes for the dead-letter copy of a record handed over as a mapping (never raises)."""
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits, odd keys: stdlib json copes
        try:
            return json.dumps(obj, default=str, skipkeys=True).encode("utf-8", "replace")
        except (TypeError, ValueError):
            return repr(obj).encode("utf-8", "replace")


def _ts_from(value: Any) -> float | None:
    """Unix seconds from an int/float or an ISO-8601 string with a zone; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, int) and abs(value) > _MAX_SAFE_INT:
            return None
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        ts = moment.timestamp()
    else:
        return None
    if not math.isfinite(ts) or ts < 0 or ts > 4_102_444_800:  # up to 2100-01-01
        return None
    return ts


def _clean_id(value: Any) -> str | None:
    """An identifier: a non-empty string, or an integer turned into one."""
    if isinstance(value, str):  # first: three of these for each event
        text = value.strip()
        return text if text and len(text) <= _MAX_ID_CHARS and text.isprintable() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Invalid(Exception):
    """A field broke the contract (internal to the parsers, which return it as a value)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _event_head(obj: Mapping[str, Any]) -> tuple[str, float, str]:
    """``user_id``, ``ts`` (unix seconds) and ``type``: present and well-formed."""
    for name in ("user_id", "ts", "type"):
        if obj.get(name) is None:
            raise _Invalid(f"missing_field:{name}", f"'{name}' is required")
    user_id = _clean_id(obj["user_id"])
    if user_id is None:
        raise _Invalid(
            "bad_type:user_id", "user_id must be a non-empty printable string or an integer"
        )
    ts = _ts_from(obj["ts"])
    if ts is None:
        raise _Invalid("bad_type:ts", "ts must be unix seconds or an ISO-8601 string with a zone")
    event_type = obj["type"]
    if not isinstance(event_type, str):
        raise _Invalid("bad_type:type", "type must be a string")
    if event_type not in EVENT_TYPES:
        raise _Invalid("unknown_event_type", f"unknown event type {event_type[:40]!r}")
    return user_id, ts, event_type


def _event_item(obj: Mapping[str, Any], event_type: str) -> str | None:
    """``item_id``: well-formed when present, required by item events."""
    item_id: str | None = None
    if obj.get("item_id") is not None:
        item_id = _clean_id(obj["item_id"])
        if item_id is None:
            raise _Invalid("bad_type:item_id", "item_id must be a non-empty string or an integer")
    if event_type in ITEM_EVENT_TYPES and item_id is None:
        raise _Invalid("missing_field:item_id", f"'{event_type}' events need an item_id")
    return item_id


def _event_text(obj: Mapping[str, Any], event_type: str, max_chars: int) -> str | None:
    """``text``: stripped, valid Unicode, at most ``max_chars``; required by text events."""
    text: str | None = None
    if obj.get("text") is not None:
        if not isinstance(obj["text"], str):
            raise _Invalid("bad_type:text", "text must be a string")
        if _has_lone_surrogate(obj["text"]):
            raise _Invalid("bad_value:text", "text is not valid Unicode")
        text = obj["text"].strip()
        if len(text) > max_chars:
            raise _Invalid("text_too_long", f"{len(text)} characters > {max_chars}")
        if not text:
            text = None
    if event_type in TEXT_EVENT_TYPES and text is None:
        raise _Invalid("missing_field:text", f"'{event_type}' events need a non-empty text")
    return text


def _event_rating(obj: Mapping[str, Any], event_type: str) -> float | None:
    """``rating``: a number in [0, 5]; required by ``rate`` events."""
    rating: float | None = None
    if obj.get("rating") is not None:
        value = obj["rating"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("bad_type:rating", "rating must be a number")
        if isinstance(value, int) and abs(value) > _MAX_SAFE_INT:
            raise _Invalid("bad_value:rating", "rating must be in [0, 5]")
        rating = float(value)
        if not (0.0 <= rating <= 5.0):
            raise _Invalid("bad_value:rating", "rating must be in [0, 5]")
    if event_type == "rate" and rating is None:
        raise _Invalid("missing_field:rating", "'rate' events need a rating")
    return rating


def _event_id(obj: Mapping[str, Any], fallback_id: str | Callable[[], str] | None) -> str:
    """``event_id``, or ``fallback_id`` (``topic/partition/offset``; called when it is a
    function) when absent."""
    if obj.get("event_id") is not None:
        event_id = _clean_id(obj["event_id"])
        if event_id is None:
            raise _Invalid("bad_type:event_id", "event_id must be a non-empty string or an integer")
    else:
        event_id = fallback_id() if callable(fallback_id) else fallback_id
    if event_id is None:
        raise _Invalid("missing_field:event_id", "no event_id and no topic/partition/offset")
    return event_id


def _event_context(obj: Mapping[str, Any], max_chars: int) -> dict[str, str | float | int]:
    """``context``: at most 32 keys of strings (at most ``max_chars``) or finite numbers."""
    return _checked_context(obj.get("context"), max_chars)


def _checked_context(raw_context: Any, max_chars: int) -> dict[str, str | float | int]:
    """:func:`_event_context` of the ``context`` value itself (None: empty)."""
    context: dict[str, str | float | int] = {}
    if raw_context is None:
        return context
    if not isinstance(raw_context, dict) or len(raw_context) > _MAX_CONTEXT_KEYS:
        raise _Invalid("bad_type:context", "context must be an object of at most 32 keys")
    for key, value in raw_context.items():
        kind = type(value)
        if kind is not str and kind is not int and kind is not float:
            kind = _context_kind(key, value)  # a bool, a subclass, anything else
        if kind is str:
            if len(value) > max_chars or _has_lone_surrogate(value):
                raise _bad_context("bad_value:context", key, "is too long or not Unicode")
        elif kind is int:
            if abs(value) > _MAX_SAFE_INT:
                raise _bad_context("bad_value:context", key, "is out of range")
        elif not math.isfinite(value):
            raise _bad_context("bad_type:context", key, "is not finite")
        context[key] = value
    return context


def _context_kind(key: str, value: Any) -> type:
    """str, int or float: the type a context value counts as; raises for others."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad_context("bad_type:context", key, "must be a string or number")
    return str if isinstance(value, str) else int if isinstance(value, int) else float


def _bad_context(reason: str, key: str, why: str) -> _Invalid:
    """The rejection of one context value (its message built only then)."""
    return _Invalid(reason, f"context[{str(key)[:40]!r}] {why}")


class _Common(msgspec.Struct, forbid_unknown_fields=True):
    """The shape of a valid event as most producers write it: the contract's fields
    only, ids as strings or integers, ``ts`` in unix seconds within :func:`_ts_from`'s
    range, a known type, a rating within [0, 5], a context of strings and numbers.
    msgspec decodes and checks this in C; what it cannot say (an id's whitespace and
    printability, the text's and the context's bounds, which fields a type needs) is
    checked after, exactly as the full checks do."""

    user_id: str | int
    ts: Annotated[float, msgspec.Meta(ge=0.0, le=4_102_444_800.0)]
    type: Literal[tuple(sorted(EVENT_TYPES - {USER_DELETION}))]  # type: ignore[valid-type]
    event_id: str | int | None = None
    item_id: str | int | None = None
    text: str | None = None
    rating: Annotated[float, msgspec.Meta(ge=0.0, le=5.0)] | None = None
    context: dict[str, str | int | float] | None = None


_COMMON = msgspec.json.Decoder(_Common)
#: The integers orjson reads as integers (beyond them, as floats: not an id).
_JSON_INTS = range(-(2**63), 2**64)


def _common_id(value: str | int) -> str | None:
    """:func:`_clean_id` of what orjson would have read for ``value``."""
    if type(value) is int and value not in _JSON_INTS:
        return None
    return _clean_id(value)


def _common_event(
    raw: bytes,
    fallback_id: str | Callable[[], str] | None,
    offset: int | None,
    partition: int | None,
    max_text_chars: int,
) -> Event | None:
    """``raw``'s :class:`Event` when it has the common shape (:class:`_Common`) and is
    valid; None when anything is unusual or wrong: the full checks then decide, and name
    the reason. Never accepts a record the full checks reject, and makes the same event
    (a property test compares the two on generated records)."""
    try:
        common = _COMMON.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    user_id = _common_id(common.user_id)
    if user_id is None:
        return None
    event_type = common.type
    item_id = None if common.item_id is None else _common_id(common.item_id)
    if item_id is None and (common.item_id is not None or event_type in ITEM_EVENT_TYPES):
        return None
    text = common.text
    if text is not None:
        if _has_lone_surrogate(text):
            return None
        text = text.strip()
        if len(text) > max_text_chars:
            return None
        text = text or None
    if text is None and event_type in TEXT_EVENT_TYPES:
        return None
    rating = common.rating
    if rating is None and event_type == "rate":
        return None
    if common.event_id is not None:
        event_id = _common_id(common.event_id)
    else:
        event_id = fallback_id() if callable(fallback_id) else fallback_id
    if event_id is None:
        return None
    try:
        context = _checked_context(common.context, max_text_chars)
    except _Invalid:
        return None
    return Event(
        user_id, common.ts, event_type, event_id, item_id, text, rating, context, offset, partition
    )


def parse_event(
    raw: bytes | str | Mapping[str, Any],
    *,
    fallback_id: str | Callable[[], str] | None = None,
    offset: int | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    partition: int | None = None,
) -> Event | Rejected:
    """Validate one interaction event against the contract.

    ``fallback_id`` (usually ``topic/partition/offset``; a function giving it is called
    only for an event without one) stands in for a missing ``event_id``; ``offset`` is
    the record's partition offset, kept on the event.
    ``max_text_chars`` bounds ``text`` (characters); ``max_record_bytes``
    bounds the encoded record (bytes). Returns the :class:`Event` or a :class:`Rejected`.
    """
    if isinstance(raw, bytes | bytearray | memoryview) and len(raw) > max_record_bytes:
        return Rejected("record_too_large", f"{len(raw)} bytes > {max_record_bytes}", bytes(raw))
    if type(raw) is bytes:  # a Kafka record's value
        event = _common_event(raw, fallback_id, offset, partition, max_text_chars)
        if event is not None:
            return event
    return _checked_event(raw, fallback_id, offset, partition, max_text_chars)


def _checked_event(
    raw: bytes | str | Mapping[str, Any],
    fallback_id: str | Callable[[], str] | None,
    offset: int | None,
    partition: int | None,
    max_text_chars: int,
) -> Event | Rejected:
    """Every check of the contract, in order: the first problem found is the reason."""
    obj, rejected, raw_bytes = _load_object(raw)
    if rejected is not None:
        return rejected
    assert obj is not None
    try:  # the checks run in this order: the first problem found is the reason
        user_id, ts, event_type = _event_head(obj)
        item_id = _event_item(obj, event_type)
        text = _event_text(obj, event_type, max_text_chars)
        rating = _event_rating(obj, event_type)
        event_id = _event_id(obj, fallback_id)
        context = _event_context(obj, max_text_chars)
    except _Invalid as invalid:
        return Rejected(invalid.reason, invalid.detail, raw_bytes or _dump_raw(obj))
    record = UserDeletion if event_type == USER_DELETION else Event
    # Positional, in the fields' order (one of these per event read: keywords cost more).
    return record(
        user_id, ts, event_type, event_id, item_id, text, rating, context, offset, partition
    )


def _text_field(obj: Mapping[str, Any], name: str, max_chars: int) -> str | Rejected:
    value = obj.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        return Rejected(f"bad_type:{name}", f"{name} must be a string")
    if _has_lone_surrogate(value):
        return Rejected(f"bad_value:{name}", f"{name} is not valid Unicode")
    if len(value) > max_chars:
        return Rejected("text_too_long", f"{name}: {len(value)} characters > {max_chars}")
    return value.strip()


def parse_catalog(
    key: bytes | str | None,
    raw: bytes | str | Mapping[str, Any] | None,
    *,
    max_text_chars: int = 4 * DEFAULT_MAX_TEXT_CHARS,
) -> CatalogItem | CatalogDeletion | Rejected:
    """Validate one catalog record; a null value (tombstone) or ``deleted: true`` is a deletion.

    ``key`` is the record's Kafka key (the item id), used for tombstones.
    """
    if raw is None:
        item_key = _clean_id(key.decode("utf-8", "replace") if isinstance(key, bytes) else key)
        if item_key is None:
            return Rejected("missing_field:item_id", "tombstone without a key")
        return CatalogDeletion(item_key)
    obj, rejected, raw_bytes = _load_object(raw)
    if rejected is not None:
        return rejected
    assert obj is not None

    def fail(reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, raw_bytes or _dump_raw(obj))

    if obj.get("item_id") is None:
        return fail("missing_field:item_id", "'item_id' is required")
    item_id = _clean_id(obj["item_id"])
    if item_id is None:
        return fail("bad_type:item_id", "item_id must be a non-empty string or an integer")
    deleted = obj.get("deleted", False)
    if deleted is not None and not isinstance(deleted, bool):
        return fail("bad_type:deleted", "deleted must be true or false")
    if deleted:
        return CatalogDeletion(item_id)
    title = obj.get("title")
    if title is None:
        return fail("missing_field:title", "'title' is required")
    if not isinstance(title, str) or not title.strip():
        return fail("bad_type:title", "title must be a non-empty string")
    fields: dict[str, str] = {}
    for name in ("title", "description", "category", "image_caption"):
        value = _text_field(obj, name, max_text_chars)
        if isinstance(value, Rejected):
            return fail(value.reason, value.detail)
        fields[name] = value
    raw_tags = obj.get("tags")
    tags: tuple[str, ...] = ()
    if raw_tags is not None:
        if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
            return fail("bad_type:tags", "tags must be a list of strings")
        if any(_has_lone_surrogate(t) for t in raw_tags):
            return fail("bad_value:tags", "a tag is not valid Unicode")
        tags = tuple(dict.fromkeys(t.strip() for t in raw_tags if t.strip()))
    return CatalogItem(item_id=item_id, tags=tags, **fields)


def parse_recommendation(raw: bytes | str | Mapping[str, Any]) -> Recommendation | Rejected:
    """Read a recommendation record back (for ``interest subscribe`` and tests)."""
    obj, rejected, raw_bytes = _load_object(raw)
    if rejected is not None:
        return rejected
    assert obj is not None
    try:
        intent = obj.get("intent")
        return Recommendation(
            user_id=str(obj["user_id"]),
            version=int(obj["version"]),
            event_ts=float(obj["event_ts"]),
            published_at=float(obj["published_at"]),
            trigger_event_id=str(obj.get("trigger_event_id", "")),
            items=tuple(
                RecommendedItem(str(i["item_id"]), float(i["score"]), str(i.get("reason", "")))
                for i in obj.get("items", [])
            ),
            interests=tuple(
                InterestLabel(str(i["label"]), float(i["weight"])) for i in obj.get("interests", [])
            ),
            intent=None
            if not intent
            else Intent(str(intent["label"]), float(intent["confidence"])),
            model=str(obj.get("model", "")),
            model_version=None if obj.get("model_version") is None else int(obj["model_version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return Rejected("bad_recommendation", str(exc)[:200], raw_bytes)
