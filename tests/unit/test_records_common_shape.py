"""The events of the common shape are parsed by msgspec in C (``_common_event``), the rest
by every check in order (``_checked_event``): the same events either way, the same
reasons for the rejected ones, and the common shape really takes the short way."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_core.records import (
    EVENT_TYPES,
    USER_DELETION,
    Event,
    _checked_event,
    _common_event,
    parse_event,
)
from producers.synthetic import generate_dataset


def _mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten: a record is then often wrong in one field only."""
    return st.sampled_from(range(10)).flatmap(lambda i: odd if i == 0 else valid)


_printable = st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=["Cc"])
_good_ids = st.one_of(
    st.sampled_from(["u1", "m7", "e-12"]),
    st.integers(min_value=-5, max_value=10**6),
    st.text(alphabet=_printable, min_size=1, max_size=10),
)
_ids = _mostly(
    _good_ids,
    st.one_of(
        st.sampled_from([" u1", "u1 ", "", " ", "a b", "\x00a", "\u3000x", "x\u00a0", "\tx"]),
        st.text(max_size=12),
        st.text(min_size=255, max_size=258, alphabet="ab "),
        st.integers(min_value=-(2**65), max_value=2**65),
        st.booleans(),
        st.floats(allow_nan=False),
        st.none(),
        st.lists(st.integers(), max_size=1),
    ),
)
_ts = _mostly(
    st.floats(min_value=0.0, max_value=4_102_444_800.0) | st.integers(0, 4_102_444_800),
    st.one_of(
        st.floats(min_value=-10.0, max_value=-1e-9),
        st.floats(min_value=4.0e9, max_value=4.2e9),
        st.integers(min_value=-5, max_value=2**66),
        st.sampled_from([-0.0, 4_102_444_800.5, 1e400]),
        st.sampled_from(["2023-11-14T22:13:20Z", "2023-11-14T22:13:20", "1700000000", ""]),
        st.booleans(),
        st.none(),
    ),
)
_types = _mostly(
    st.sampled_from(sorted(EVENT_TYPES)),
    st.sampled_from([USER_DELETION, "teleport", "", "Click", 3, None]),
)
_ratings = _mostly(
    st.floats(min_value=0.0, max_value=5.0) | st.integers(0, 5),
    st.one_of(
        st.floats(min_value=-1.0, max_value=6.0),
        st.integers(min_value=-2, max_value=2**64),
        st.sampled_from([5.000001, -0.0, -1e-300]),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
    ),
)
_texts = _mostly(
    st.text(alphabet=_printable, min_size=1, max_size=5),
    st.one_of(
        st.text(max_size=14),
        st.sampled_from(["  ", " hi ", "\ud800", "x\udc00y", "\n\tok\n", "a" * 7, " " + "b" * 6]),
        st.integers(),
        st.none(),
    ),
)
_good_scalars = st.one_of(
    st.text(max_size=5),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)
_contexts = _mostly(
    st.dictionaries(st.text(max_size=6), _good_scalars, max_size=3),
    st.one_of(
        st.dictionaries(
            st.text(max_size=6),
            st.one_of(
                st.text(min_size=7, max_size=9),
                st.integers(min_value=-(2**64), max_value=2**64),
                st.floats(),
                st.booleans(),
                st.none(),
                st.lists(st.integers(), max_size=1),
                st.just("\ud800"),
            ),
            min_size=1,
            max_size=3,
        ),
        st.dictionaries(st.text(max_size=3), st.integers(0, 9), min_size=31, max_size=34),
        st.lists(st.integers(), max_size=2),
        st.text(max_size=3),
        st.none(),
    ),
)
_fields = {
    "event_id": _ids,
    "user_id": _ids,
    "ts": _ts,
    "type": _types,
    "item_id": _ids,
    "text": _texts,
    "rating": _ratings,
    "context": _contexts,
}
_head = ("user_id", "ts", "type", "item_id", "event_id")
_events = st.fixed_dictionaries(
    {name: _fields[name] for name in _head},
    optional={name: values for name, values in _fields.items() if name not in _head},
)


def _dumps(value: dict[str, Any], how: str) -> bytes:
    if how == "orjson":
        try:
            return orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits
            how = "json"
    if how == "json":  # stdlib: big integers, Infinity, NaN, escaped lone surrogates
        return json.dumps(value).encode()
    # every member twice, the second time with the first member's value: duplicate keys
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
    if members:
        first = next(iter(value))
        members.append(f"{json.dumps(first)}: {json.dumps(value[first])}")
        members.insert(0, f"{json.dumps(first)}: null")
    return ("{" + ", ".join(members) + "}").encode()


@settings(max_examples=1500, deadline=None)
@given(
    _events,
    st.sampled_from([None] * 12 + [*_head, "session"]),
    st.sampled_from(["orjson", "orjson", "json", "duplicates"]),
    st.sampled_from([None, "t/0/7", "callable"]),
    st.sampled_from([2000, 6]),
)
def test_either_way_gives_the_same_event_or_the_same_reason(
    value: dict[str, Any], dropped: str | None, how: str, fallback: str | None, max_text_chars: int
) -> None:
    value.pop(dropped or "", None)
    if dropped == "session":
        value["session"] = 7  # a field the contract does not name
    raw = _dumps(value, how)
    fallback_id = (lambda: "t/1/9") if fallback == "callable" else fallback
    args = (fallback_id, 41, 3, max_text_chars)
    parsed = parse_event(
        raw, fallback_id=fallback_id, offset=41, partition=3, max_text_chars=max_text_chars
    )
    assert parsed == _checked_event(raw, *args)
    short = _common_event(raw, *args)
    assert short is None or short == parsed  # never accepts what the checks reject


def test_the_common_shapes_take_the_short_way() -> None:
    """The bench's rating events and the generator's events (text, context) are parsed
    by msgspec, and give what every check gives."""
    data = generate_dataset(users=20, items=40, events=400, seed=3)
    lines = [orjson.dumps(e) for e in data.events]
    lines.append(
        b'{"event_id":"ml-r-1","user_id":"u5","ts":1128633957,"type":"rate",'
        b'"item_id":"m31","rating":3.5}'
    )
    lines.append(b'{"user_id":5,"ts":1700000000.25,"type":"click","item_id":77}')
    for raw in lines:
        short = _common_event(raw, "t/0/1", 1, 0, 2000)
        assert isinstance(short, Event), raw
        assert short == _checked_event(raw, "t/0/1", 1, 0, 2000)


NUMBERS = [
    *[
        "1e-400",
        "-0",
        "1E5",
        "1.0e+2",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "0x10",
        "1_000",
        "+1",
        "Infinity",
        "NaN",
        "00",
        "1e309",
    ],
    *["2.5e-324", "4102444800.0000000001", "4102444800.00000001", "5.0000000000000001"],
    *["4.99999999999999999999", "-0.0", "18446744073709551616", "-9223372036854775809"],
]


def test_numbers_spelled_any_way_read_alike() -> None:
    """JSON numbers as other producers may write them, in the time, the rating and the
    ids: the same event or the same reason either way."""
    for number in NUMBERS:
        for template in (
            '{"user_id":"u","ts":%s,"type":"click","item_id":"m","event_id":"e"}',
            '{"user_id":"u","ts":1,"type":"rate","item_id":"m","event_id":"e","rating":%s}',
            '{"user_id":%s,"ts":1,"type":"click","item_id":%s}',
        ):
            raw = (template % ((number,) * template.count("%s"))).encode()
            checked = _checked_event(raw, "t/0/1", 1, 0, 2000)
            assert parse_event(raw, fallback_id="t/0/1", offset=1, partition=0) == checked
            short = _common_event(raw, "t/0/1", 1, 0, 2000)
            assert short is None or short == checked, raw


def test_contexts_at_their_bounds_read_alike() -> None:
    """A context's bounds (keys, string length, integer range) and odd values: the same
    event or the same reason either way."""
    big = 2**63
    values: list[object] = ["abcdef", "abcdefg", "", big - 1, big, -(big - 1), -big]
    values += [2**64 - 1, 2**64, 1.5, True, None, [1], {"a": 1}]
    contexts: list[object] = [{"k": value} for value in values]
    contexts += [{f"k{i}": i for i in range(n)} for n in (0, 32, 33)]
    for context in contexts:
        for how in ("orjson", "json"):
            raw = _dumps(event_with(context), how)
            checked = _checked_event(raw, None, 1, 0, 6)
            assert _common_event(raw, None, 1, 0, 6) in (None, checked), raw
            assert parse_event(raw, offset=1, partition=0, max_text_chars=6) == checked


def event_with(context: object) -> dict[str, Any]:
    return {
        "event_id": "e",
        "user_id": "u",
        "ts": 1,
        "type": "click",
        "item_id": "m",
        "context": context,
    }
