"""The record contract (CONTRACT.md field tables) as implemented by interest_core.records."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.records import (
    EVENT_TYPES,
    ITEM_EVENT_TYPES,
    TEXT_EVENT_TYPES,
    CatalogDeletion,
    CatalogItem,
    Event,
    Intent,
    InterestLabel,
    Recommendation,
    RecommendedItem,
    Rejected,
    UserDeletion,
    parse_catalog,
    parse_event,
    parse_recommendation,
)


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "user_id": "u1",
        "ts": 1_700_000_000.5,
        "type": "click",
        "item_id": "m1",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(raw: Any, **kwargs: Any) -> str:
    result = parse_event(orjson.dumps(raw) if not isinstance(raw, bytes) else raw, **kwargs)
    assert isinstance(result, Rejected), result
    return result.reason


# --------------------------------------------------------------------------- events


def test_valid_event_round_trips() -> None:
    parsed = parse_event(orjson.dumps(event(context={"device": "mobile", "n": 2})))
    assert isinstance(parsed, Event)
    assert (parsed.user_id, parsed.ts, parsed.type, parsed.item_id) == (
        "u1",
        1_700_000_000.5,
        "click",
        "m1",
    )
    assert parsed.context == {"device": "mobile", "n": 2}
    again = parse_event(parsed.to_json())
    assert again == parsed


@pytest.mark.parametrize("name", ["user_id", "ts", "type"])
def test_required_fields(name: str) -> None:
    assert reason_of(event(**{name: ...})) == f"missing_field:{name}"
    assert reason_of(event(**{name: None})) == f"missing_field:{name}"


def test_numeric_user_id_becomes_string() -> None:
    parsed = parse_event(orjson.dumps(event(user_id=42, item_id=318)))
    assert isinstance(parsed, Event)
    assert parsed.user_id == "42" and parsed.item_id == "318"


@pytest.mark.parametrize("bad", ["", "   ", True, 1.5, ["u1"], {"id": 1}, "a\nb", "x" * 300])
def test_bad_user_id(bad: Any) -> None:
    assert reason_of(event(user_id=bad)) == "bad_type:user_id"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20.500Z", 1_700_000_000.5),
    ],
)
def test_ts_accepts_unix_seconds_and_zoned_iso(ts: Any, expected: float) -> None:
    parsed = parse_event(orjson.dumps(event(ts=ts)))
    assert isinstance(parsed, Event)
    assert parsed.ts == pytest.approx(expected)


@pytest.mark.parametrize(
    "ts", ["2023-11-14T22:13:20", "yesterday", "", True, [1], -5, 5_000_000_000, {"s": 1}]
)
def test_bad_ts(ts: Any) -> None:
    """ISO without a zone is ambiguous, so it is rejected like any other bad time."""
    assert reason_of(event(ts=ts)) == "bad_type:ts"


def test_unknown_and_mistyped_event_type() -> None:
    assert reason_of(event(type="teleport")) == "unknown_event_type"
    assert reason_of(event(type=3)) == "bad_type:type"


@pytest.mark.parametrize("kind", sorted(ITEM_EVENT_TYPES))
def test_item_events_need_item_id(kind: str) -> None:
    extra = {"text": "nice", "rating": 4}
    assert reason_of(event(type=kind, item_id=..., **extra)) == "missing_field:item_id"


@pytest.mark.parametrize("kind", sorted(TEXT_EVENT_TYPES))
def test_text_events_need_text(kind: str) -> None:
    assert reason_of(event(type=kind)) == "missing_field:text"
    assert reason_of(event(type=kind, text="   ")) == "missing_field:text"
    assert reason_of(event(type=kind, text=12)) == "bad_type:text"


def test_search_and_chat_need_no_item() -> None:
    for kind in ("search", "chat"):
        parsed = parse_event(orjson.dumps(event(type=kind, item_id=..., text="jazz vinyl")))
        assert isinstance(parsed, Event) and parsed.item_id is None
        assert parsed.text == "jazz vinyl"


def test_text_too_long_uses_the_limit() -> None:
    assert reason_of(event(type="chat", text="a" * 2001)) == "text_too_long"
    assert reason_of(event(type="chat", text="a" * 11), max_text_chars=10) == "text_too_long"
    assert isinstance(parse_event(orjson.dumps(event(type="chat", text="a" * 2000))), Event)


def test_any_language_text_is_accepted() -> None:
    parsed = parse_event(orjson.dumps(event(type="search", text="ジャズのレコード 🎷")))
    assert isinstance(parsed, Event) and parsed.text == "ジャズのレコード 🎷"


def test_rating_rules() -> None:
    assert reason_of(event(type="rate")) == "missing_field:rating"
    assert reason_of(event(type="rate", rating=5.5)) == "bad_value:rating"
    assert reason_of(event(type="rate", rating=-1)) == "bad_value:rating"
    assert reason_of(event(type="rate", rating="4")) == "bad_type:rating"
    assert reason_of(event(type="rate", rating=True)) == "bad_type:rating"
    for value in (0, 2.5, 5):
        parsed = parse_event(orjson.dumps(event(type="rate", rating=value)))
        assert isinstance(parsed, Event) and parsed.rating == float(value)


def test_positive_events() -> None:
    def positive(**fields: Any) -> bool:
        parsed = parse_event(orjson.dumps(event(**fields)))
        assert isinstance(parsed, Event)
        return parsed.is_positive

    assert positive(type="purchase") and positive(type="click") and positive(type="add_to_cart")
    assert positive(type="rate", rating=4) and not positive(type="rate", rating=3.5)
    assert not positive(type="view") and not positive(type="skip")


def test_event_id_falls_back_to_position() -> None:
    raw = orjson.dumps(event(event_id=...))
    parsed = parse_event(raw, fallback_id="events/3/17", offset=17)
    assert isinstance(parsed, Event) and parsed.event_id == "events/3/17" and parsed.offset == 17
    assert reason_of(raw) == "missing_field:event_id"
    assert reason_of(event(event_id=["x"])) == "bad_type:event_id"


def test_context_rules() -> None:
    assert reason_of(event(context=[1])) == "bad_type:context"
    assert reason_of(event(context={"nested": {"a": 1}})) == "bad_type:context"
    assert reason_of(event(context={"flag": True})) == "bad_type:context"
    assert reason_of(event(context={str(i): i for i in range(33)})) == "bad_type:context"
    assert reason_of(event(context={"note": "x" * 3000})) == "bad_value:context"


def test_not_json_not_object_and_too_large() -> None:
    assert reason_of(b'{"user_id": "u1", "ts": ') == "not_json"
    assert reason_of(b"\xff\xfe garbage") == "not_json"
    assert reason_of(b"[1, 2]") == "not_object"
    assert reason_of(b'"text"') == "not_object"
    big = orjson.dumps(event(type="chat", text="a" * 100))
    assert reason_of(big, max_record_bytes=50) == "record_too_large"


def test_rejected_keeps_original_bytes() -> None:
    raw = b'{"user_id": "u1", "ts": 1, "type": "teleport"}'
    result = parse_event(raw)
    assert isinstance(result, Rejected) and result.raw == raw and result.detail


def test_every_event_type_has_a_valid_form() -> None:
    for kind in EVENT_TYPES:
        parsed = parse_event(orjson.dumps(event(type=kind, text="hello", rating=4)))
        assert isinstance(parsed, Event), (kind, parsed)


# --------------------------------------------------------------------------- catalog


def test_catalog_item_parses() -> None:
    raw = {
        "item_id": "m318",
        "title": " Shawshank Redemption, The (1994) ",
        "description": "prison drama",
        "category": "Drama",
        "tags": ["prison", "hope", "prison", " "],
        "image_caption": "two men in a prison yard",
    }
    item = parse_catalog(b"m318", orjson.dumps(raw))
    assert isinstance(item, CatalogItem)
    assert item.title == "Shawshank Redemption, The (1994)"
    assert item.tags == ("prison", "hope")
    assert parse_catalog(None, item.to_json()) == item


def test_catalog_deletions() -> None:
    assert parse_catalog(b"m1", None) == CatalogDeletion("m1")
    assert parse_catalog("m1", None) == CatalogDeletion("m1")
    assert parse_catalog(None, orjson.dumps({"item_id": "m1", "deleted": True})) == (
        CatalogDeletion("m1")
    )
    tombstone_without_key = parse_catalog(None, None)
    assert isinstance(tombstone_without_key, Rejected)
    assert tombstone_without_key.reason == "missing_field:item_id"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"title": "x"}, "missing_field:item_id"),
        ({"item_id": "m1"}, "missing_field:title"),
        ({"item_id": "m1", "title": "  "}, "bad_type:title"),
        ({"item_id": "m1", "title": 5}, "bad_type:title"),
        ({"item_id": [1], "title": "x"}, "bad_type:item_id"),
        ({"item_id": "m1", "title": "x", "deleted": "yes"}, "bad_type:deleted"),
        ({"item_id": "m1", "title": "x", "tags": "a,b"}, "bad_type:tags"),
        ({"item_id": "m1", "title": "x", "tags": [1]}, "bad_type:tags"),
        ({"item_id": "m1", "title": "x", "category": 3}, "bad_type:category"),
        ({"item_id": "m1", "title": "x", "description": "d" * 9000}, "text_too_long"),
    ],
)
def test_catalog_rejections(raw: dict[str, Any], reason: str) -> None:
    result = parse_catalog(None, orjson.dumps(raw))
    assert isinstance(result, Rejected) and result.reason == reason


def test_catalog_not_json() -> None:
    result = parse_catalog(None, b"{oops")
    assert isinstance(result, Rejected) and result.reason == "not_json"


# --------------------------------------------------------------------------- recommendations


def test_recommendation_round_trip() -> None:
    rec = Recommendation(
        user_id="u42",
        version=17,
        event_ts=1_700_000_000.5,
        published_at=1_700_000_000.61,
        trigger_event_id="e-123",
        items=(RecommendedItem("m527", 0.83, "similar to 'X' you rated 5"),),
        interests=(InterestLabel("Drama", 0.41),),
        intent=Intent("browse", 0.72),
        model="all-MiniLM-L6-v2",
    )
    assert parse_recommendation(rec.to_json()) == rec
    broken = parse_recommendation(b'{"user_id": "u1"}')
    assert isinstance(broken, Rejected) and broken.reason == "bad_recommendation"


# --------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(sorted(EVENT_TYPES)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3),
)
_event_like = st.fixed_dictionaries(
    {},
    optional={
        name: _field_values
        for name in ("event_id", "user_id", "ts", "type", "item_id", "text", "rating", "context")
    },
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_event_never_raises_on_bytes(raw: bytes) -> None:
    assert isinstance(parse_event(raw), Event | Rejected)
    assert isinstance(parse_catalog(b"k", raw), CatalogItem | CatalogDeletion | Rejected)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_parse_event_never_raises_on_json(value: Any) -> None:
    raw = json.dumps(value).encode()  # stdlib: big integers, Infinity and all
    assert isinstance(parse_event(raw), Event | Rejected)
    assert isinstance(parse_catalog(None, raw), CatalogItem | CatalogDeletion | Rejected)


@settings(max_examples=400, deadline=None)
@given(_event_like)
def test_parse_event_never_raises_on_event_shaped_objects(value: dict[str, Any]) -> None:
    assert isinstance(parse_event(value, fallback_id="t/0/0"), Event | Rejected)
    result = parse_event(json.dumps(value).encode())
    assert isinstance(result, Event | Rejected)
    if isinstance(result, Event):
        # whatever was accepted obeys the contract
        assert result.user_id and result.type in EVENT_TYPES
        assert result.type not in ITEM_EVENT_TYPES or result.item_id
        assert result.type not in TEXT_EVENT_TYPES or result.text
        assert result.type != "rate" or (result.rating is not None and 0 <= result.rating <= 5)
        assert parse_event(result.to_json()) == result
    else:
        assert result.reason and ":" not in result.reason.split(":", 1)[-1]


def test_mappings_with_out_of_range_numbers_are_rejected_not_raised() -> None:
    """Producers may hand parse_event a dict; Python ints have no size limit."""
    huge = 10**400
    base = {"user_id": "u", "ts": 1, "type": "rate", "item_id": "i", "rating": 4}
    result = parse_event({**base, "ts": huge}, fallback_id="x")
    assert isinstance(result, Rejected) and result.reason == "bad_type:ts"
    for fields, reason in [
        ({"rating": huge}, "bad_value:rating"),
        ({"context": {"n": huge}}, "bad_value:context"),
        ({"user_id": None, "event_id": -(2**64)}, "missing_field:user_id"),
    ]:
        result = parse_event({**base, **fields}, fallback_id="x")
        assert isinstance(result, Rejected) and result.reason == reason
        assert result.raw  # a dead-letter copy exists even for unserialisable numbers


def test_delete_user_parses_into_a_typed_user_deletion() -> None:
    raw = {"event_id": "d1", "user_id": "u1", "ts": 5, "type": "delete_user"}
    parsed = parse_event(orjson.dumps(raw), offset=12)
    assert isinstance(parsed, UserDeletion) and isinstance(parsed, Event)
    assert parsed == UserDeletion.of("u1", 5.0, "d1", offset=12)
    assert orjson.loads(parsed.to_json())["type"] == "delete_user"  # the wire is unchanged
    assert not isinstance(
        parse_event(orjson.dumps({**raw, "type": "view", "item_id": "i"})), UserDeletion
    )
    with pytest.raises(TypeError, match="UserDeletion"):
        Event("u1", 5.0, "delete_user", "d1")


def test_the_worker_names_an_event_without_an_id_by_where_it_was_read() -> None:
    """``parse_records`` (the worker's edge) gives an id-less event the record's
    ``topic/partition/offset``, and rejects it for what ``parse_event`` with that name
    would reject it for."""
    from consumers.batching import InputRecord
    from consumers.step import parse_records
    from interest_core.settings import LimitsSettings

    base = {"user_id": "u1", "ts": 1_700_000_000, "type": "click", "item_id": "i1"}
    values = [
        orjson.dumps(base),
        orjson.dumps({**base, "event_id": "e7"}),
        orjson.dumps({**base, "context": {"k": [1]}}),  # no id, and a bad context
        orjson.dumps({k: v for k, v in base.items() if k != "user_id"}),
    ]
    records = [InputRecord("events", 3, 40 + i, b"u1", v) for i, v in enumerate(values)]
    oks, errs = parse_records(records, LimitsSettings())
    assert [p.event.event_id for p in oks] == ["events/3/40", "e7"]
    assert [(f.record.offset, f.why.reason) for f in errs] == [
        (42, "bad_type:context"),
        (43, "missing_field:user_id"),
    ]
    for failed in errs:
        again = parse_event(failed.record.value, fallback_id=failed.record.source)
        assert isinstance(again, Rejected) and again.reason == failed.why.reason
