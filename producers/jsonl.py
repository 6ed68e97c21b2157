"""JSON Lines files: read them as ``(line_no, bytes)``, write records, guess a key.

Shared by ``interest convert``, ``interest generate``, ``interest replay`` and
``interest catalog load``. Lines are handed on as the original bytes so a producer can
publish exactly what the file held.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["best_effort_key", "read_lines", "write_jsonl"]


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_no, line)`` for every non-blank line of a JSONL file.

    ``line_no`` counts from 1 over every physical line (blank ones included), so it
    matches what an editor shows. The line is returned without its ``\\n`` / ``\\r\\n``.
    Raises ``OSError`` when the file cannot be opened.
    """
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield line_no, stripped


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any] | bytes]) -> int:
    """Write records (mappings, or ready-made JSON bytes) one per line; returns the count.

    Keys keep their insertion order, so the same records always give the same bytes.
    The file is written to a temporary name and renamed, so a reader never sees half a
    file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    count = 0
    with open(tmp, "wb") as handle:
        for record in records:
            if isinstance(record, bytes | bytearray):
                handle.write(bytes(record).rstrip(b"\r\n") + b"\n")
            else:
                handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    os.replace(tmp, target)
    return count


def best_effort_key(line: bytes, field: str) -> bytes | None:
    """The value of ``field`` in a (possibly malformed) JSON line, as key bytes, else None.

    Used to key records that failed validation but are published anyway (to exercise
    the dead-letter path): a string or integer field becomes its UTF-8 text.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get(field)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, str) and value.strip():
        return value.strip().encode("utf-8", "replace")
    return None
