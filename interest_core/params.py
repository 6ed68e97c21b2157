"""Versioned learned parameters: the records of the compacted ``interest.models`` topic.

A learned parameter (the fusion weights, an adaptation layer's matrix...) is a named
array shared by the whole fleet. Each publication is a :class:`ParamRecord` keyed by its
``name``: a ``version`` that only grows, the ``model`` it was learned against (the
encoder's name for parameters that live in its embedding space, ``""`` for parameters
that do not depend on it), ``shape`` and ``dtype``, the values as base64 of the
little-endian bytes, a SHA-256 ``checksum`` of those bytes, ``created_at`` (unix
seconds, wall clock of the publisher) and free-form ``meta`` (feature names, the number
of events it was trained on...).

The wire format is one JSON object (``format`` 1)::

    {"format": 1, "name": "fusion.weights", "version": 7, "model": "",
     "shape": [5], "dtype": "float32", "data": "AACAPw...", "checksum": "sha256:9f2c...",
     "created_at": 1700000000.0, "meta": {"features": ["content", "itemknn", ...]}}

:func:`parse_params` is strict: it returns the record or a :class:`Rejected` with a
machine-readable reason (``not_json``, ``bad_format``, ``missing_field:shape``,
``key_mismatch``, ``wrong_model``, ``wrong_shape``, ``bad_dtype``, ``bad_size``,
``bad_checksum``, ``not_finite``, ``bad_version``...), never an exception, so a consumer
keeps the last good version and carries on. :class:`ParamSpec` says what a consumer
expects of one name (its shape, its model); :class:`ParamTable` keeps the last good
version of every name and refuses stale or malformed updates with a reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from interest_core.records import Rejected

__all__ = [
    "PARAMS_FORMAT",
    "ParamRecord",
    "ParamSpec",
    "ParamTable",
    "encode_params",
    "parse_params",
]

#: Version of the wire format; a record with another ``format`` is rejected.
PARAMS_FORMAT = 1
#: The dtypes a record may carry, by wire name (always little-endian on the wire).
_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_MAX_NAME_CHARS = 128
_MAX_DIMS = 4
#: A bound on one record (bytes of JSON), so a hostile record cannot exhaust memory;
#: a 384 x 384 float32 matrix is about 800 KB of base64.
DEFAULT_MAX_PARAM_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParamRecord:
    """One version of one named learned parameter. ``values`` is read-only."""

    name: str
    version: int
    model: str
    values: np.ndarray
    checksum: str
    created_at: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(n) for n in self.values.shape)

    @property
    def dtype(self) -> str:
        """The wire name of the array's dtype (``float32`` or ``float64``)."""
        return "float32" if self.values.dtype == np.float32 else "float64"

    def to_dict(self) -> dict[str, Any]:
        """The wire object of this record (see the module docstring)."""
        raw = np.ascontiguousarray(self.values, dtype=_DTYPES[self.dtype]).tobytes()
        return {
            "format": PARAMS_FORMAT,
            "name": self.name,
            "version": self.version,
            "model": self.model,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "data": base64.b64encode(raw).decode("ascii"),
            "checksum": self.checksum,
            "created_at": self.created_at,
            "meta": dict(self.meta),
        }

    def to_json(self) -> bytes:
        """The record as UTF-8 JSON bytes, the value on the models topic."""
        return orjson.dumps(self.to_dict())


def _checksum(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def encode_params(
    name: str,
    values: np.ndarray | Sequence[float],
    *,
    version: int,
    created_at: float,
    model: str = "",
    dtype: str = "float32",
    meta: Mapping[str, Any] | None = None,
) -> ParamRecord:
    """A :class:`ParamRecord` of ``values`` stored as ``dtype``; the checksum is computed.

    Raises ``ValueError`` for values a consumer would reject (non-finite, an empty name,
    a negative version, an unknown dtype), so a publisher fails at the source.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    if not name or len(name) > _MAX_NAME_CHARS:
        raise ValueError("a parameter needs a name of 1 to 128 characters")
    if version < 0:
        raise ValueError("version must be >= 0")
    array = np.array(values, dtype=_DTYPES[dtype])
    if array.ndim == 0 or array.ndim > _MAX_DIMS:
        raise ValueError(f"a parameter has 1 to {_MAX_DIMS} dimensions, not {array.ndim}")
    if not np.isfinite(array).all():
        raise ValueError(f"parameter {name!r} has non-finite values")
    array = array.astype(array.dtype.newbyteorder("="))
    array.setflags(write=False)
    raw = np.ascontiguousarray(array, dtype=_DTYPES[dtype]).tobytes()
    return ParamRecord(
        name=name,
        version=int(version),
        model=model,
        values=array,
        checksum=_checksum(raw),
        created_at=float(created_at),
        meta=dict(meta or {}),
    )


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """What a consumer expects of one named parameter.

    ``shape`` None accepts any shape; ``model`` None accepts any model, otherwise the
    record's ``model`` must equal it (a matrix learned in another encoder's space is
    meaningless here).
    """

    name: str
    shape: tuple[int, ...] | None = None
    model: str | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def parse_params(
    raw: bytes | str | Mapping[str, Any],
    *,
    key: str | None = None,
    spec: ParamSpec | None = None,
    max_bytes: int = DEFAULT_MAX_PARAM_BYTES,
) -> ParamRecord | Rejected:
    """The :class:`ParamRecord` in ``raw`` or a :class:`Rejected` with the reason.

    ``key`` (the Kafka key) must equal the record's name when given; ``spec`` adds the
    consumer's expectations of shape and model. Never raises on bad input.
    """
    raw_bytes = b""
    if isinstance(raw, bytes | bytearray | memoryview | str):
        raw_bytes = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
        if len(raw_bytes) > max_bytes:
            return Rejected("record_too_large", f"{len(raw_bytes)} bytes > {max_bytes}", raw_bytes)
        try:
            obj: Any = orjson.loads(raw_bytes)
        except orjson.JSONDecodeError as exc:
            return Rejected("not_json", str(exc)[:200], raw_bytes)
    else:
        obj = raw

    def fail(reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, raw_bytes)

    if not isinstance(obj, Mapping):
        return fail("not_object", f"JSON {type(obj).__name__}, not an object")
    if obj.get("format") != PARAMS_FORMAT:
        return fail("bad_format", f"format {obj.get('format')!r}, expected {PARAMS_FORMAT}")
    for name in ("name", "version", "model", "shape", "dtype", "data", "checksum", "created_at"):
        if name not in obj:
            return fail(f"missing_field:{name}", f"{name} is required")

    name = obj["name"]
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME_CHARS:
        return fail("bad_type:name", "name must be a string of 1 to 128 characters")
    if key is not None and key != name:
        return fail("key_mismatch", f"key {key!r} != name {name!r}")
    version = _int(obj["version"])
    if version is None or version < 0:
        return fail("bad_version", f"version {obj['version']!r} is not an integer >= 0")
    model = obj["model"]
    if not isinstance(model, str):
        return fail("bad_type:model", "model must be a string")
    created_at = obj["created_at"]
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, int | float)
        or not math.isfinite(created_at)
    ):
        return fail("bad_type:created_at", "created_at must be a finite number (unix seconds)")
    meta = obj.get("meta", {})
    if not isinstance(meta, Mapping):
        return fail("bad_type:meta", "meta must be an object")

    shape_value = obj["shape"]
    if not isinstance(shape_value, list) or not 1 <= len(shape_value) <= _MAX_DIMS:
        return fail("bad_type:shape", f"shape must be a list of 1 to {_MAX_DIMS} integers")
    dims = [_int(n) for n in shape_value]
    if any(n is None or n < 0 for n in dims):
        return fail("bad_type:shape", "shape must hold integers >= 0")
    shape = tuple(int(n) for n in dims if n is not None)
    dtype_name = obj["dtype"]
    if dtype_name not in _DTYPES:
        return fail("bad_dtype", f"dtype {dtype_name!r}, expected one of {sorted(_DTYPES)}")
    dtype = _DTYPES[dtype_name]

    if spec is not None:
        if spec.model is not None and model != spec.model:
            return fail(
                "wrong_model", f"learned for model {model!r}, this worker runs {spec.model!r}"
            )
        if spec.shape is not None and shape != tuple(spec.shape):
            return fail("wrong_shape", f"shape {list(shape)}, expected {list(spec.shape)}")

    data = obj["data"]
    if not isinstance(data, str):
        return fail("bad_type:data", "data must be a base64 string")
    try:
        values_raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        return fail("bad_data", f"data is not base64: {exc}"[:200])
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(values_raw) != expected_bytes:
        return fail(
            "bad_size", f"{len(values_raw)} bytes, shape {list(shape)} needs {expected_bytes}"
        )
    checksum = obj["checksum"]
    if not isinstance(checksum, str) or checksum != _checksum(values_raw):
        return fail("bad_checksum", "checksum does not match the data")
    values = np.frombuffer(values_raw, dtype=dtype).reshape(shape)
    if not np.isfinite(values).all():
        return fail("not_finite", "the values hold NaN or infinity")
    values = values.astype(dtype.newbyteorder("="))
    values.setflags(write=False)
    return ParamRecord(
        name=name,
        version=version,
        model=model,
        values=values,
        checksum=checksum,
        created_at=float(created_at),
        meta=dict(meta),
    )


class ParamTable:
    """The last good version of every named parameter, and why updates were refused.

    ``specs`` name the expectations per parameter name (names without a spec are
    accepted with any shape and model). :meth:`offer` applies one record's bytes (or a
    tombstone, ``None``) and returns the rejection, if any; nothing here raises on bad
    input. Pure: the Kafka follower feeds it, a test or the offline evaluation can too.
    """

    def __init__(
        self,
        specs: Sequence[ParamSpec] = (),
        *,
        max_bytes: int = DEFAULT_MAX_PARAM_BYTES,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.max_bytes = max_bytes
        self._current: dict[str, ParamRecord] = {}
        #: Count of refused updates by reason (``stale_version`` included).
        self.rejected: dict[str, int] = {}

    def offer(self, key: str | None, value: bytes | None) -> ParamRecord | Rejected | None:
        """Apply one record of the models topic: the accepted record, the rejection, or
        ``None`` for a tombstone (the name is forgotten: consumers fall back to their
        defaults)."""
        if value is None:
            if key is not None:
                self._current.pop(key, None)
            return None
        spec = self.specs.get(key) if key is not None else None
        parsed = parse_params(value, key=key, spec=spec, max_bytes=self.max_bytes)
        if isinstance(parsed, Rejected):
            self.rejected[parsed.reason] = self.rejected.get(parsed.reason, 0) + 1
            return parsed
        if key is None and parsed.name in self.specs:
            # A keyless record (only from a misbehaving producer) is still checked.
            again = parse_params(value, spec=self.specs[parsed.name], max_bytes=self.max_bytes)
            if isinstance(again, Rejected):
                return self._refuse(again.reason, again.detail, value)
        held = self._current.get(parsed.name)
        if held is not None and parsed.version < held.version:
            return self._refuse(
                "stale_version", f"version {parsed.version} < held {held.version}", value
            )
        if held is not None and parsed.version == held.version and parsed.checksum != held.checksum:
            # Two publishers claimed one version: keep the first, say so.
            return self._refuse(
                "version_conflict", f"version {parsed.version} already held with other data", value
            )
        self._current[parsed.name] = parsed
        return parsed

    def _refuse(self, reason: str, detail: str, value: bytes) -> Rejected:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return Rejected(reason, detail, bytes(value))

    def get(self, name: str) -> ParamRecord | None:
        """The last good version of ``name`` (None when none was accepted)."""
        return self._current.get(name)

    def versions(self) -> dict[str, int]:
        """The version held of every name."""
        return {name: record.version for name, record in self._current.items()}

    def __len__(self) -> int:
        return len(self._current)
