"""Versioned learned parameters: encoding round-trips, every bad record is refused with a
reason, and a table keeps the last good version of each name."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from interest_core.params import (
    ParamRecord,
    ParamSpec,
    ParamTable,
    encode_params,
    parse_params,
)
from interest_core.records import Rejected


def _record(version: int = 1, values: object = (0.5, 1.5, 3.0), **kw: object) -> ParamRecord:
    return encode_params("fusion.weights", values, version=version, created_at=1.7e9, **kw)  # type: ignore[arg-type]


def _tampered(**changes: object) -> bytes:
    obj = _record().to_dict()
    obj.update(changes)
    return orjson.dumps(obj)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    st.sampled_from(["float32", "float64"]),
)
def test_round_trip_is_exact(values: np.ndarray, dtype: str) -> None:
    record = encode_params("adapter.matrix", values, version=3, created_at=1.0, dtype=dtype)
    parsed = parse_params(record.to_json(), key="adapter.matrix")
    assert isinstance(parsed, ParamRecord)
    assert parsed.shape == values.shape
    assert parsed.dtype == dtype
    np.testing.assert_array_equal(parsed.values, values.astype(dtype))
    assert parsed.checksum == record.checksum
    assert not parsed.values.flags.writeable


def test_wire_format_is_little_endian_base64_with_sha256() -> None:
    obj = _record(values=[1.0, 2.0]).to_dict()
    raw = np.array([1.0, 2.0], dtype="<f4").tobytes()
    assert obj["data"] == base64.b64encode(raw).decode()
    assert obj["checksum"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert obj["shape"] == [2] and obj["dtype"] == "float32" and obj["format"] == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (_tampered(format=2), "bad_format"),
        (
            orjson.dumps({k: v for k, v in _record().to_dict().items() if k != "shape"}),
            "missing_field:shape",
        ),
        (_tampered(version=-1), "bad_version"),
        (_tampered(version=1.5), "bad_version"),
        (_tampered(version=True), "bad_version"),
        (_tampered(dtype="int8"), "bad_dtype"),
        (_tampered(shape=[4]), "bad_size"),
        (_tampered(shape=[]), "bad_type:shape"),
        (_tampered(shape=[-3]), "bad_type:shape"),
        (_tampered(data="!!!"), "bad_data"),
        (_tampered(data=5), "bad_type:data"),
        (_tampered(checksum="sha256:00"), "bad_checksum"),
        (_tampered(created_at="yesterday"), "bad_type:created_at"),
        (_tampered(model=3), "bad_type:model"),
        (_tampered(meta=[1]), "bad_type:meta"),
        (_tampered(name=""), "bad_type:name"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    parsed = parse_params(raw)
    assert isinstance(parsed, Rejected)
    assert parsed.reason == reason


def _with_values(values: np.ndarray) -> bytes:
    """A record whose checksum matches ``values`` (so only the values are wrong)."""
    raw = values.astype("<f4").tobytes()
    return _tampered(
        shape=list(values.shape),
        data=base64.b64encode(raw).decode(),
        checksum="sha256:" + hashlib.sha256(raw).hexdigest(),
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    parsed = parse_params(_with_values(np.array([1.0, bad, 2.0])))
    assert isinstance(parsed, Rejected) and parsed.reason == "not_finite"


def test_encoder_refuses_non_finite_at_the_source() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        _record(values=[1.0, float("nan")])


def test_spec_checks_shape_model_and_key() -> None:
    raw = _record(model="all-MiniLM-L6-v2").to_json()
    ok = parse_params(
        raw, key="fusion.weights", spec=ParamSpec("fusion.weights", (3,), "all-MiniLM-L6-v2")
    )
    assert isinstance(ok, ParamRecord)
    wrong_shape = parse_params(raw, spec=ParamSpec("fusion.weights", (5,)))
    assert isinstance(wrong_shape, Rejected) and wrong_shape.reason == "wrong_shape"
    wrong_model = parse_params(raw, spec=ParamSpec("fusion.weights", model="bge-small"))
    assert isinstance(wrong_model, Rejected) and wrong_model.reason == "wrong_model"
    wrong_key = parse_params(raw, key="adapter.matrix")
    assert isinstance(wrong_key, Rejected) and wrong_key.reason == "key_mismatch"


def test_oversized_record_is_refused_before_parsing() -> None:
    parsed = parse_params(_record().to_json(), max_bytes=50)
    assert isinstance(parsed, Rejected) and parsed.reason == "record_too_large"


def test_table_keeps_the_last_good_version() -> None:
    table = ParamTable([ParamSpec("fusion.weights", (3,))])
    assert table.get("fusion.weights") is None
    first = table.offer("fusion.weights", _record(1).to_json())
    assert isinstance(first, ParamRecord)
    # A malformed update leaves version 1 in use.
    refused = table.offer("fusion.weights", _tampered(checksum="sha256:00"))
    assert isinstance(refused, Rejected)
    assert table.get("fusion.weights") is first
    # A wrong-shaped newer version too.
    wrong = table.offer("fusion.weights", _record(5, values=[1.0, 2.0]).to_json())
    assert isinstance(wrong, Rejected) and wrong.reason == "wrong_shape"
    assert table.versions() == {"fusion.weights": 1}
    newer = table.offer("fusion.weights", _record(2, values=[2.0, 2.0, 2.0]).to_json())
    assert isinstance(newer, ParamRecord)
    np.testing.assert_array_equal(table.get("fusion.weights").values, [2.0, 2.0, 2.0])  # type: ignore[union-attr]
    # An older version arriving late is stale, not applied.
    stale = table.offer("fusion.weights", _record(1).to_json())
    assert isinstance(stale, Rejected) and stale.reason == "stale_version"
    # The same version again is harmless; the same version with other data is a conflict.
    assert isinstance(
        table.offer("fusion.weights", _record(2, values=[2.0, 2.0, 2.0]).to_json()), ParamRecord
    )
    conflict = table.offer("fusion.weights", _record(2, values=[9.0, 9.0, 9.0]).to_json())
    assert isinstance(conflict, Rejected) and conflict.reason == "version_conflict"
    assert table.versions() == {"fusion.weights": 2}
    assert table.rejected == {
        "bad_checksum": 1,
        "wrong_shape": 1,
        "stale_version": 1,
        "version_conflict": 1,
    }


def test_tombstone_forgets_a_name() -> None:
    table = ParamTable()
    table.offer("fusion.weights", _record(1).to_json())
    assert table.offer("fusion.weights", None) is None
    assert table.get("fusion.weights") is None and len(table) == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    table = ParamTable([ParamSpec("fusion.weights", (3,))])
    outcome = table.offer("fusion.weights", raw)
    assert isinstance(outcome, Rejected)
    assert table.get("fusion.weights") is None
