"""Per-item knowledge folded from item signals, exactly once: the item-keyed stage.

:class:`KnowledgeFold` is the pure core of the item aggregation: it holds one
:class:`ItemRecord` per item and applies :class:`~interest_core.item_signals.ItemSignal`
values to them, with the same arithmetic as the single-process
:class:`~interest_core.cooccurrence.CoOccurrence` and
:class:`~interest_core.trending.Trending`:

* ``count``: positive events on the item (``n_i`` of the cosine ``c_ij / sqrt(n_i n_j)``);
* ``neighbours``: pair counts ``c_ij`` by item id, at most ``2 x max_neighbours`` held;
  when an update passes that, only the ``max_neighbours`` strongest are kept (ties by
  item id), so memory is bounded by items x neighbours;
* ``trending`` and ``popularity``: the event weights decayed in event time with two
  half-lives, each kept as a value at a reference time (order-independent, O(1)).

Exactly once: every signal names its source event (events partition, offset), and each
item keeps, IN its own record, the newest source offset it applied per events
partition (``watermarks``). A worker re-processes a user's events in offset order, so a
signal at or below the watermark is a duplicate and is skipped. Because the watermark
travels with the published record, an aggregator that restores the records from
``interest.items`` after a crash dedupes exactly the signals it had already published,
whatever its committed input offset.

Deleting an item drops its record and removes it from every neighbour list the fold
holds (each aggregator applies the catalog's deletions to its own items); later signals
naming it are ignored until the catalog lists it again.

The wire format of ``interest.items`` (``format`` 1, keyed by item id, compacted; a null
value is a deleted item)::

    {"format": 1, "item_id": "m1", "version": 12, "count": 7.0,
     "neighbours": [["m7", 3.85], ["m9", 1.0]],
     "trending": [0.75, 1700000000.5, 86400.0],
     "popularity": [4.1, 1700000000.5, 2592000.0],
     "watermarks": {"3": 1207}, "event_ts": 1700000000.5, "ingested_at": 1700000001.2}

``trending`` and ``popularity`` are ``[value at ts, ts (seconds), half-life (seconds)]``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from interest_core.item_signals import ItemSignal
from interest_core.records import Rejected

__all__ = [
    "ITEMS_FORMAT",
    "DecayedCount",
    "ItemRecord",
    "KnowledgeFold",
    "parse_item_knowledge",
]

ITEMS_FORMAT = 1
_MAX_ID_CHARS = 256
_MAX_NEIGHBOURS_ON_WIRE = 100_000
DEFAULT_MAX_ITEM_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class DecayedCount:
    """A sum of weights decayed in event time: ``value`` as of ``ts`` (seconds), halving
    every ``half_life_s`` seconds (never, when infinite). Adding is order-independent:
    an event older than ``ts`` is decayed to ``ts`` before it is added."""

    half_life_s: float
    value: float = 0.0
    ts: float | None = None

    def _factor(self, dt: float) -> float:
        if math.isinf(self.half_life_s) or self.half_life_s <= 0 or dt == 0.0:
            return 1.0
        return math.exp2(-dt / self.half_life_s)

    def add(self, weight: float, ts: float) -> None:
        """Add ``weight`` at event time ``ts`` (seconds)."""
        if self.ts is None:
            self.value, self.ts = weight, ts
        elif ts >= self.ts:
            self.value = self.value * self._factor(ts - self.ts) + weight
            self.ts = ts
        else:
            self.value += weight * self._factor(self.ts - ts)

    def at(self, now_ts: float) -> float:
        """The decayed value at event time ``now_ts`` (seconds)."""
        if self.ts is None:
            return 0.0
        return self.value * self._factor(now_ts - self.ts)

    def to_wire(self) -> list[float | None]:
        """``[value, ts, half_life_s]`` (ts None when nothing was added)."""
        return [self.value, self.ts, self.half_life_s]


@dataclass(slots=True)
class ItemRecord:
    """What the fleet knows about one item (see the module docstring for each field).

    ``version`` grows by one each time the record is published; ``event_ts`` is the
    newest event time folded in (seconds); ``ingested_at`` the newest Kafka ingest time
    of a folded event (unix seconds), the start of the knowledge-latency measure.
    """

    item_id: str
    trending: DecayedCount
    popularity: DecayedCount
    count: float = 0.0
    neighbours: dict[str, float] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    version: int = 0
    event_ts: float = 0.0
    ingested_at: float = 0.0

    def strongest(self, n: int | None = None) -> list[tuple[str, float]]:
        """Neighbours by pair count, strongest first, ties by item id; at most ``n``."""
        ranked = sorted(self.neighbours.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked if n is None else ranked[:n]

    def to_dict(self) -> dict[str, Any]:
        """The record's wire object."""
        return {
            "format": ITEMS_FORMAT,
            "item_id": self.item_id,
            "version": self.version,
            "count": self.count,
            "neighbours": [[other, c] for other, c in self.strongest()],
            "trending": self.trending.to_wire(),
            "popularity": self.popularity.to_wire(),
            "watermarks": {str(p): o for p, o in sorted(self.watermarks.items())},
            "event_ts": self.event_ts,
            "ingested_at": self.ingested_at,
        }

    def to_json(self) -> bytes:
        """The value on ``interest.items``."""
        return orjson.dumps(self.to_dict())


class KnowledgeFold:
    """Applies item signals to per-item knowledge, exactly once per source event.

    ``max_neighbours`` bounds each neighbour list (as :class:`CoOccurrence`);
    ``trending_half_life_s`` and ``popularity_half_life_s`` are the decay half-lives in
    event-time seconds. :meth:`take_changed` hands out the records changed since the
    last call, each with its version bumped: what to publish.
    """

    def __init__(
        self,
        *,
        max_neighbours: int = 200,
        trending_half_life_s: float = 86400.0,
        popularity_half_life_s: float = 30 * 86400.0,
    ) -> None:
        self.max_neighbours = max_neighbours
        self.trending_half_life_s = trending_half_life_s
        self.popularity_half_life_s = popularity_half_life_s
        self.items: dict[str, ItemRecord] = {}
        self.deleted: set[str] = set()
        self._changed: set[str] = set()
        self._removed: set[str] = set()
        #: Signals skipped because their item had already applied them (replays).
        self.duplicates = 0
        #: Signals and pairs ignored because they named a deleted item.
        self.ignored_deleted = 0
        self.applied = 0

    def _new(self, item_id: str) -> ItemRecord:
        return ItemRecord(
            sys.intern(item_id),
            DecayedCount(self.trending_half_life_s),
            DecayedCount(self.popularity_half_life_s),
        )

    def apply(self, signal: ItemSignal) -> bool:
        """Fold one signal into its item; False when skipped (a duplicate of an applied
        event, or a deleted item)."""
        item_id = signal.item_id
        if item_id in self.deleted:
            self.ignored_deleted += 1
            return False
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = self._new(item_id)
        if item.watermarks.get(signal.partition, -1) >= signal.offset:
            self.duplicates += 1
            return False
        item.watermarks[signal.partition] = signal.offset
        if signal.count:
            item.count += signal.count
        if signal.weight:
            item.trending.add(signal.weight, signal.ts)
            item.popularity.add(signal.weight, signal.ts)
        neighbours = item.neighbours
        for other, amount in signal.pairs:
            if other in self.deleted:
                self.ignored_deleted += 1
                continue
            other = sys.intern(other)
            neighbours[other] = neighbours.get(other, 0.0) + amount
        if len(neighbours) > 2 * self.max_neighbours:
            item.neighbours = dict(item.strongest(self.max_neighbours))
        item.event_ts = max(item.event_ts, signal.ts)
        item.ingested_at = max(item.ingested_at, signal.ingested_at)
        self._changed.add(item_id)
        self._removed.discard(item_id)
        self.applied += 1
        return True

    def apply_all(self, signals: Iterable[ItemSignal]) -> int:
        """Fold signals in order; returns how many were applied (not skipped)."""
        return sum(1 for signal in signals if self.apply(signal))

    def delete_item(self, item_id: str) -> None:
        """Forget ``item_id`` and remove it from every neighbour list held; signals naming
        it are ignored until :meth:`restore_item` (the catalog lists it again)."""
        self.deleted.add(item_id)
        if self.items.pop(item_id, None) is not None:
            self._removed.add(item_id)
            self._changed.discard(item_id)
        for other in self.items.values():
            if other.neighbours.pop(item_id, None) is not None:
                self._changed.add(other.item_id)

    def restore_item(self, item_id: str) -> None:
        """The catalog lists ``item_id`` again: it learns from scratch from now on."""
        self.deleted.discard(item_id)

    def load(self, record: ItemRecord) -> None:
        """Take a record read back from ``interest.items`` (restore after a restart or a
        rebalance): its counts, neighbours, watermarks and version."""
        if record.item_id in self.deleted:
            return
        self.items[record.item_id] = record
        self._changed.discard(record.item_id)
        stale = [other for other in record.neighbours if other in self.deleted]
        if stale:  # deleted while the record was not held: clean it and republish
            for other in stale:
                del record.neighbours[other]
            self._changed.add(record.item_id)

    def unload(self, item_ids: Iterable[str]) -> None:
        """Drop items this process no longer owns (its partition went elsewhere)."""
        for item_id in item_ids:
            self.items.pop(item_id, None)
            self._changed.discard(item_id)
            self._removed.discard(item_id)

    def take_changed(self) -> tuple[list[ItemRecord], list[str]]:
        """The records changed since the last call (versions bumped by one) and the ids
        deleted since (to publish as tombstones)."""
        changed = []
        for item_id in sorted(self._changed):
            item = self.items.get(item_id)
            if item is not None:
                item.version += 1
                changed.append(item)
        removed = sorted(self._removed)
        self._changed.clear()
        self._removed.clear()
        return changed, removed

    @property
    def pending(self) -> int:
        """Items changed or removed and not yet handed out by :meth:`take_changed`."""
        return len(self._changed) + len(self._removed)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _decayed(value: Any) -> DecayedCount | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    amount = _number(value[0])
    ts = None if value[1] is None else _number(value[1])
    half_life = value[2]
    if isinstance(half_life, int | float) and not isinstance(half_life, bool):
        half_life = float(half_life)
    else:
        return None
    if amount is None or amount < 0 or (value[1] is not None and ts is None):
        return None
    if math.isnan(half_life) or half_life <= 0:
        return None
    return DecayedCount(half_life, amount, ts)


def _neighbours(pairs: list[Any], item_id: str) -> dict[str, float] | str:
    """``[[item_id, count], ...]`` as a dict, or what is wrong with it. Checked in bulk:
    every worker parses every record of ``interest.items`` when it starts."""
    if not all(type(pair) is list and len(pair) == 2 for pair in pairs):
        return "a neighbour is [item_id, count]"
    ids = [pair[0] for pair in pairs]
    counts = [pair[1] for pair in pairs]
    if not all(type(other) is str and other for other in ids) or item_id in ids:
        return "a neighbour id is not a string, empty, or the item itself"
    if not all(type(c) is float or type(c) is int for c in counts):
        return "a neighbour count is not a number"
    if not all(0.0 < c < math.inf for c in counts):
        return "a neighbour count is not a finite number > 0"
    return dict(zip(map(sys.intern, ids), map(float, counts), strict=True))


def _watermarks(raw_marks: Any) -> dict[int, int] | str:
    """``{"partition": offset, ...}`` (offsets >= -1) as ``{partition: offset}``, or what
    is wrong with it."""
    if not isinstance(raw_marks, Mapping):
        return "watermarks must map partition to offset"
    watermarks: dict[int, int] = {}
    for partition, offset in raw_marks.items():
        if not (isinstance(partition, str) and partition.isdigit()):
            return f"partition {partition!r:.40}"
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < -1:
            return f"offset {offset!r:.40}"
        watermarks[int(partition)] = offset
    return watermarks


def parse_item_knowledge(
    key: bytes | str | None,
    value: bytes | Mapping[str, Any],
    *,
    max_bytes: int = DEFAULT_MAX_ITEM_BYTES,
) -> ItemRecord | Rejected:
    """The :class:`ItemRecord` in one ``interest.items`` record or the reason it is
    refused (``not_json``, ``bad_format``, ``key_mismatch``, ``bad_value:count``,
    ``bad_neighbours``, ``bad_decay:trending``, ``bad_watermarks``...). Never raises.
    A tombstone (null value) is a deletion and is the caller's to handle."""
    raw = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
    if isinstance(value, bytes | bytearray | memoryview):
        if len(raw) > max_bytes:
            return Rejected("record_too_large", f"{len(raw)} bytes > {max_bytes}", raw)
        try:
            obj: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejected("not_json", str(exc)[:200], raw)
    else:
        obj = value

    def fail(reason: str, detail: str) -> Rejected:
        return Rejected(reason, detail, raw)

    if not isinstance(obj, Mapping):
        return fail("not_object", "an items record is a JSON object")
    if obj.get("format") != ITEMS_FORMAT:
        return fail("bad_format", f"format {obj.get('format')!r}, expected {ITEMS_FORMAT}")
    item_id = obj.get("item_id")
    if not isinstance(item_id, str) or not item_id or len(item_id) > _MAX_ID_CHARS:
        return fail("bad_type:item_id", "item_id must be a string of 1 to 256 characters")
    if key is not None:
        try:
            key_str = key.decode("utf-8") if isinstance(key, bytes | bytearray) else str(key)
        except UnicodeDecodeError:
            return fail("bad_key", "key is not UTF-8")
        if key_str != item_id:
            return fail("key_mismatch", f"key {key_str!r} != item_id {item_id!r}")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return fail("bad_version", "version must be an integer >= 0")
    count = _number(obj.get("count"))
    if count is None or count < 0:
        return fail("bad_value:count", "count must be a finite number >= 0")
    raw_neighbours = obj.get("neighbours")
    if not isinstance(raw_neighbours, list) or len(raw_neighbours) > _MAX_NEIGHBOURS_ON_WIRE:
        return fail("bad_neighbours", "neighbours must be a list of [item_id, count]")
    neighbours = _neighbours(raw_neighbours, item_id)
    if isinstance(neighbours, str):
        return fail("bad_neighbours", neighbours)
    trending = _decayed(obj.get("trending"))
    if trending is None:
        return fail("bad_decay:trending", "trending must be [value >= 0, ts, half_life_s > 0]")
    popularity = _decayed(obj.get("popularity"))
    if popularity is None:
        return fail("bad_decay:popularity", "popularity must be [value >= 0, ts, half_life_s > 0]")
    watermarks = _watermarks(obj.get("watermarks", {}))
    if isinstance(watermarks, str):
        return fail("bad_watermarks", watermarks)
    event_ts = _number(obj.get("event_ts", 0.0))
    ingested_at = _number(obj.get("ingested_at", 0.0))
    if event_ts is None or ingested_at is None:
        return fail("bad_type:event_ts", "event_ts and ingested_at must be finite numbers")
    return ItemRecord(
        item_id=sys.intern(item_id),
        trending=trending,
        popularity=popularity,
        count=count,
        neighbours=neighbours,
        watermarks=watermarks,
        version=version,
        event_ts=event_ts,
        ingested_at=ingested_at,
    )
