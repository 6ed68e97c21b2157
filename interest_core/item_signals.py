"""Item signals: what one applied event teaches about items, keyed by item.

Workers are keyed by user, so each sees only its users' events; what those events say
about items must reach one item-keyed place to be learned from the whole fleet. A
worker derives, from every event it applies, one :class:`ItemSignal` per item the event
touches and publishes them to ``interest.item-signals`` keyed by item id:

* for a positive event on item ``i`` after the user's positive history ``h_0, h_1, ...``
  (newest first, as :meth:`~interest_core.cooccurrence.CoOccurrence.add` reads it):
  the signal for ``i`` carries ``count`` 1 (one more positive event on ``i``), the
  event's ``weight`` at its event time ``ts`` (trending and long-horizon popularity), and
  the pairs ``(h_j, decay ** j)``; each ``h_j`` gets a signal with the pair
  ``(i, decay ** j)``. These are exactly the increments the single-process co-occurrence
  and trending make, split by the item they change.
* a :class:`FusionFeedback` for the fusion weights: the listwise gradient the worker
  computed when the user acted on a ranked candidate, keyed by :data:`FUSION_KEY`.

Every signal names its source, the event's ``(partition, offset)`` in the events topic,
so the aggregation applies each exactly once however often a worker re-processes the
event (:mod:`interest_core.item_knowledge`). Signals are a function of the event and
the user's state before it, so re-processing a batch from the same state gives the
same signals.

The wire format. A worker writes bundles in columns (``format`` 3,
:mod:`interest_core.signal_columns`): per micro-batch, one record per signals partition
(more when it passes a size bound) holding the signals of every item whose key maps to
that partition, keyed by one of those items' ids (so the default partitioner places it
where each of its items' own key would). The aggregation also reads the two previous
versions' records. Bundles of per-item entries (``format`` 2, round 8)::

    key: "m1"
    {"format": 2, "items": [
        {"item_id": "m1", "signals": [
            {"p": 3, "o": 1207, "ts": 1700000000.5, "at": 1700000001.2,
             "n": 1.0, "w": 1.5, "pairs": [["m7", 1.0], ["m9", 0.85]]}]},
        {"item_id": "m7", "signals": [[3, 1207, 1700000000.5, 1700000001.2, "m1", 1.0]]}]}

where a partner's signal (no count, no weight, one pair) is the array
``[p, o, ts, at, other item, amount]``.

A worker's positive event touches some 18 items; one record per item and batch made the
producer, the broker and the aggregation pay a record's overhead for each (RESULTS.md,
round 8). Items of one bundle are refused one by one: a malformed entry does not cost the
others. And ``format`` 1, one item per record keyed by its id (the workers before
round 8), which is also the format of the fusion lessons::

    key: item id
    {"format": 1, "item_id": "m1", "signals": [{"p": 3, ...}]}

    key: "\\x00fusion"
    {"format": 1, "fusion": [{"p": 3, "o": 1207, "at": 1700000001.2,
                               "g": [0.0, 0.1, -0.1, 0.3, -0.2, -0.1]}]}

``at`` is when the event entered Kafka (wall clock, unix seconds): the start of the
event-to-item-knowledge latency. :func:`parse_signal_records` is strict and returns a
:class:`~interest_core.records.Rejected` with a reason for anything malformed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

import orjson

from interest_core.records import Rejected

__all__ = [
    "BUNDLE_FORMAT",
    "FUSION_KEY",
    "SIGNALS_FORMAT",
    "FusionFeedback",
    "ItemSignal",
    "OwnSignals",
    "SignalBuffer",
    "SignalRecord",
    "decay_powers",
    "derive_signals",
    "encode_bundle",
    "encode_fusion_record",
    "encode_item_record",
    "event_signal",
    "expand_signals",
    "group_by_item",
    "parse_signal_records",
    "partner_signals",
]

SIGNALS_FORMAT = 1
#: Format of a bundle: the signals of several items of one partition in one record.
BUNDLE_FORMAT = 2
#: Format of a bundle in columns (:mod:`interest_core.signal_columns`): what workers write.
COLUMNS_FORMAT = 3
#: Key of fusion feedback records: not printable, so never an item id.
FUSION_KEY = "\x00fusion"
_MAX_ID_CHARS = 256
_MAX_PAIRS = 10_000
DEFAULT_MAX_SIGNAL_BYTES = 4 * 1024 * 1024


class ItemSignal(NamedTuple):
    """One applied event's contribution to one item's knowledge.

    ``partition`` and ``offset`` locate the event in the events topic (its identity for
    exactly-once); ``ts`` is its event time (seconds); ``ingested_at`` when it entered
    Kafka (unix seconds, 0 when unknown). ``count`` is 1 on the event's own item (a
    positive event on it), else 0; ``weight`` the event's interest weight on its own
    item (trending and popularity), else 0; ``pairs`` the co-occurrence increments
    ``(other item, amount)``.

    A named tuple, not a dataclass: a worker makes about 16 per positive event (one per
    history item), and a tuple is built several times faster.
    """

    item_id: str
    partition: int
    offset: int
    ts: float
    ingested_at: float
    count: float  # type: ignore[assignment]  # shadows tuple.count, by design
    weight: float
    pairs: tuple[tuple[str, float], ...]

    def to_dict(self, ingested_at: float = 0.0) -> dict[str, Any]:
        """The signal's wire object (without its item id, which the record holds);
        a non-zero ``ingested_at`` (unix seconds) stands for the signal's own."""
        return {
            "p": self.partition,
            "o": self.offset,
            "ts": self.ts,
            "at": ingested_at or self.ingested_at,
            "n": self.count,
            "w": self.weight,
            "pairs": self.pairs,  # orjson writes tuples as arrays
        }

    def to_wire(self, ingested_at: float = 0.0) -> dict[str, Any] | list[Any]:
        """The signal's wire form in a bundle: a partner's signal (no count, no weight, one
        pair) as ``[p, o, ts, at, other item, amount]``, about half the bytes of its
        object (a worker writes some 18 per positive event); any other as
        :meth:`to_dict`."""
        if self.count == 0.0 and self.weight == 0.0 and len(self.pairs) == 1:
            other, amount = self.pairs[0]
            at = ingested_at or self.ingested_at
            return [self.partition, self.offset, self.ts, at, other, amount]
        return self.to_dict(ingested_at)


@dataclass(frozen=True, slots=True)
class FusionFeedback:
    """One listwise fusion gradient (per feature, unitless) from the event at
    ``(partition, offset)`` of the events topic; ``ingested_at`` as for signals."""

    partition: int
    offset: int
    ingested_at: float
    gradient: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """The feedback's wire object."""
        return {
            "p": self.partition,
            "o": self.offset,
            "at": self.ingested_at,
            "g": list(self.gradient),
        }


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One parsed record of the signals topic: an item's signals, or fusion feedback."""

    item_id: str | None
    signals: tuple[ItemSignal, ...] = ()
    fusion: tuple[FusionFeedback, ...] = ()


def event_signal(
    item_id: str,
    history: Sequence[str],
    *,
    weight: float,
    ts: float,
    partition: int,
    offset: int,
    ingested_at: float = 0.0,
    decay: float = 1.0,
) -> ItemSignal:
    """The own-item signal of one positive event on ``item_id`` after the user's positive
    ``history`` (item ids, newest first): ``count`` 1, the event's ``weight``, and one pair
    per distinct history item. Amounts follow :meth:`CoOccurrence.add` exactly: the
    ``j``-th distinct other item pairs with ``decay ** j``; the item itself and repeats are
    skipped without using up a power of ``decay``. It stands for the event's whole set of
    signals: :func:`partner_signals` gives the others."""
    others = [other for other in history if other != item_id]
    if len(set(others)) == len(others):  # the engine's histories: distinct items
        pairs = tuple(zip(others, decay_powers(decay, len(others)), strict=False))
    else:
        kept: list[tuple[str, float]] = []
        done = {item_id}
        amount = 1.0
        for other in others:
            if other in done:
                continue
            done.add(other)
            kept.append((other, amount))
            amount *= decay
        pairs = tuple(kept)
    # tuple.__new__ skips the named tuple's Python-level __new__ (one per positive event).
    return tuple.__new__(
        ItemSignal, (item_id, partition, offset, ts, ingested_at, 1.0, weight, pairs)
    )


_POWERS: dict[float, list[float]] = {}  # the engine's decays: one or two values


def decay_powers(decay: float, n: int, *, cache: bool = True) -> list[float]:
    """``[1, decay, decay**2, ...]`` (at least ``n``), each the previous times ``decay``
    as the loop of :func:`event_signal` multiplies them (so the same floats). Kept per
    decay, except with ``cache=False`` (a decay read from a record: any value may come)."""
    powers = _POWERS.get(decay) if cache else None
    if powers is None:
        powers = [1.0]
        if cache:
            _POWERS[decay] = powers
    while len(powers) < n:
        powers.append(powers[-1] * decay)
    return powers


def partner_signals(own: ItemSignal) -> list[ItemSignal]:
    """The signals an event's own-item signal implies for its history items: one per
    pair ``(other, amount)``, on ``other``, with the pair ``(own item, amount)``, count 0
    and weight 0, in the pairs' order."""
    # tuple.__new__ skips the named tuple's Python-level __new__ (a hot spot otherwise).
    make = tuple.__new__
    item_id, partition, offset, ts, at = own[:5]
    return [
        make(ItemSignal, (other, partition, offset, ts, at, 0.0, 0.0, ((item_id, amount),)))
        for other, amount in own.pairs
    ]


def expand_signals(own: Iterable[ItemSignal]) -> list[ItemSignal]:
    """Every signal of the events whose own-item signals are ``own`` (as
    :class:`SignalBuffer` keeps them): per event its own signal, then its partners'."""
    out: list[ItemSignal] = []
    for signal in own:
        out.append(signal)
        out += partner_signals(signal)
    return out


def derive_signals(
    item_id: str,
    history: Sequence[str],
    *,
    weight: float,
    ts: float,
    partition: int,
    offset: int,
    ingested_at: float = 0.0,
    decay: float = 1.0,
) -> list[ItemSignal]:
    """The signals of one positive event on ``item_id`` after the user's positive
    ``history`` (item ids, newest first): the event's own item first (see
    :func:`event_signal`), then one per distinct history item."""
    own = event_signal(
        item_id,
        history,
        weight=weight,
        ts=ts,
        partition=partition,
        offset=offset,
        ingested_at=ingested_at,
        decay=decay,
    )
    return [own, *partner_signals(own)]


class OwnSignals(Sequence[ItemSignal]):
    """Own-item signals in event order (as :meth:`SignalBuffer.take` hands them out).

    While every signal was recorded from catalog rows (:meth:`record`,
    :meth:`SignalBuffer.positive_rows`), they are kept as the events' rows alone:
    ``own_rows`` (one per signal), ``pair_rows`` (their pairs', flat, in order), ``ends``
    (each signal's end in ``pair_rows``) and ``heads`` (each one's ``(partition, offset,
    ts, weight)``); ``item_ids`` names a row (a catalog never gives a row to another id)
    and ``decay`` is the buffer's, whose powers the pairs' amounts are. An
    :class:`ItemSignal` is made only when one is read (the columns writer and the
    journal's coverage checks read the rows instead): a positive event records four
    numbers and its pairs' rows instead of naming some 18 items (RESULTS.md, round 22).
    A signal appended as it is (:meth:`append`) turns the whole sequence into a list of
    signals: ``own_rows`` is None from then on."""

    __slots__ = ("_made", "_named", "decay", "ends", "heads", "item_ids", "own_rows", "pair_rows")

    def __init__(self, item_ids: Sequence[str] | None = None, decay: float = 1.0) -> None:
        self.item_ids = item_ids
        self.decay = decay
        self.own_rows: list[int] | None = [] if item_ids is not None else None
        self.pair_rows: list[int] = []
        self.ends: list[int] = []
        self.heads: list[tuple[int, int, float, float]] = []
        # Located: the signals made so far, by index. Named: the signals.
        self._made: dict[int, ItemSignal] = {}
        self._named: list[ItemSignal] = []

    @property
    def located(self) -> bool:
        """True when every signal came with rows (and there is at least one)."""
        return bool(self) and self.own_rows is not None and 0.0 < self.decay <= 1.0

    def record(self, row: int, others: Sequence[int], head: tuple[int, int, float, float]) -> None:
        """One positive event on ``row`` after the distinct ``others`` rows (newest first,
        without ``row``), ``head`` its ``(partition, offset, ts, weight)``, kept as rows
        (made at once when the sequence is a list of signals already)."""
        own_rows = self.own_rows
        if own_rows is None:
            self._named.append(self._signal(row, others, head))
            return
        own_rows.append(row)
        self.pair_rows += others
        self.ends.append(len(self.pair_rows))
        self.heads.append(head)

    def append(self, signal: ItemSignal) -> None:
        """Add a signal as it is (without rows): every signal is made and kept from now on."""
        if self.own_rows is not None:
            self._named = self._all()
            self.own_rows = None
            self.pair_rows, self.ends, self.heads, self._made = [], [], [], {}
        self._named.append(signal)

    def widths(self) -> list[int]:
        """Each located signal's number of pairs."""
        ends = self.ends
        return [end - start for start, end in zip([0, *ends], ends, strict=False)]

    def since(self, start: int) -> OwnSignals:
        """The signals from the ``start``-th on, as a sequence of their own (the rows
        copied: this one may grow on)."""
        tail = OwnSignals(self.item_ids, self.decay)
        if self.own_rows is None:
            tail.own_rows = None
            tail._named = self._named[start:]
            return tail
        base = self.ends[start - 1] if start else 0
        tail.own_rows = self.own_rows[start:]
        tail.pair_rows = self.pair_rows[base:]
        tail.ends = [end - base for end in self.ends[start:]] if base else self.ends[start:]
        tail.heads = self.heads[start:]
        tail._made = {i - start: signal for i, signal in self._made.items() if i >= start}
        return tail

    def __len__(self) -> int:
        return len(self._named) if self.own_rows is None else len(self.ends)

    @overload
    def __getitem__(self, index: int) -> ItemSignal: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemSignal]: ...

    def __getitem__(self, index: int | slice) -> ItemSignal | list[ItemSignal]:
        if isinstance(index, slice):
            return self._all()[index]
        if self.own_rows is None:
            return self._named[index]
        n = len(self.ends)
        at = index + n if index < 0 else index
        if not 0 <= at < n:
            raise IndexError("signal index out of range")
        return self._one(at)

    def __iter__(self) -> Iterator[ItemSignal]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OwnSignals | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __repr__(self) -> str:
        return f"OwnSignals({list(self)!r})"

    def _all(self) -> list[ItemSignal]:
        """Every signal, in order (made where not made yet)."""
        if self.own_rows is None:
            return self._named
        return [self._one(i) for i in range(len(self.ends))]

    def _one(self, i: int) -> ItemSignal:
        """The ``i``-th located signal (made once, when first read)."""
        signal = self._made.get(i)
        if signal is None:
            assert self.own_rows is not None
            start = self.ends[i - 1] if i else 0
            signal = self._made[i] = self._signal(
                self.own_rows[i], self.pair_rows[start : self.ends[i]], self.heads[i]
            )
        return signal

    def _signal(
        self, row: int, others: Sequence[int], head: tuple[int, int, float, float]
    ) -> ItemSignal:
        """The signal of one recorded event: :func:`event_signal`'s for the rows' items
        (distinct and without the event's own, so no filtering is needed)."""
        assert self.item_ids is not None
        ids = self.item_ids
        pairs = tuple(
            zip([ids[o] for o in others], decay_powers(self.decay, len(others)), strict=False)
        )
        partition, offset, ts, weight = head
        return tuple.__new__(ItemSignal, (ids[row], partition, offset, ts, 0.0, 1.0, weight, pairs))


class SignalBuffer:
    """The engine's outbox of item signals and fusion lessons, until :meth:`take`.

    One own-item signal per positive event (:func:`event_signal`) stands for all of the
    event's signals; its partners' are made only when they are written
    (:func:`~consumers.knowledge_follower.signal_records`, :func:`expand_signals`): a
    worker's events have some 18 partners each.

    ``decay`` is the per-position pair decay (as :meth:`CoOccurrence.add`). Events read
    offline carry no partition or offset; they are numbered here (partition 0, a running
    count), which is stable within one process only.
    """

    def __init__(self, decay: float = 1.0, item_ids: Sequence[str] | None = None) -> None:
        self.decay = decay
        #: Names catalog rows (see :meth:`positive_rows`); None when no rows are given.
        self.item_ids = item_ids
        self.signals = OwnSignals(item_ids, decay)
        self.lessons: list[FusionFeedback] = []
        self._next_offline = 0

    def source(self, partition: int | None, offset: int | None) -> tuple[int, int]:
        """The ``(partition, offset)`` naming an event; call once per event (an event
        without an offset is numbered here)."""
        if offset is not None:
            return (partition or 0), offset
        self._next_offline += 1
        return (partition or 0), self._next_offline - 1

    def positive(
        self,
        item_id: str,
        history: Sequence[str],
        *,
        weight: float,
        ts: float,
        source: tuple[int, int],
    ) -> ItemSignal:
        """Record one positive event's own-item signal (see :func:`event_signal`), which
        stands for its partners' too; returns it."""
        signal = event_signal(
            item_id,
            history,
            weight=weight,
            ts=ts,
            partition=source[0],
            offset=source[1],
            decay=self.decay,
        )
        self.signals.append(signal)  # named, not located: the columns come from the ids
        return signal

    def positive_rows(
        self, row: int, others: Sequence[int], *, weight: float, ts: float, source: tuple[int, int]
    ) -> None:
        """:meth:`positive` from catalog rows (a buffer with :attr:`item_ids`): the event
        on ``row`` after the distinct ``others`` rows (newest first, without ``row``;
        read at once), kept as rows; its signal is made only if it is read."""
        if self.item_ids is None:
            raise ValueError("a buffer without item ids cannot record rows")
        self.signals.record(row, others, (source[0], source[1], ts, weight))

    def lesson(self, gradient: Iterable[float], source: tuple[int, int]) -> FusionFeedback:
        """Record one fusion lesson (a listwise gradient, per feature); returns it."""
        lesson = FusionFeedback(source[0], source[1], 0.0, tuple(float(g) for g in gradient))
        self.lessons.append(lesson)
        return lesson

    def take(self) -> tuple[OwnSignals, list[FusionFeedback]]:
        """Everything recorded since the last call, in order: own-item signals (one per
        positive event; :func:`expand_signals` adds the partners') and lessons."""
        signals, lessons = self.signals, self.lessons
        self.signals, self.lessons = OwnSignals(self.item_ids, self.decay), []
        return signals, lessons


def group_by_item(signals: Iterable[ItemSignal]) -> dict[str, list[ItemSignal]]:
    """Signals grouped by item id, each group in the order given (one record per item)."""
    groups: dict[str, list[ItemSignal]] = {}
    for signal in signals:
        groups.setdefault(signal.item_id, []).append(signal)
    return groups


def encode_item_record(
    item_id: str,
    signals: Sequence[ItemSignal],
    ingested_at: Mapping[tuple[int, int], float] | None = None,
) -> bytes:
    """The value of one item's signals record in ``format`` 1 (key: the item id), as the
    previous version's workers wrote it. ``ingested_at`` maps an event's
    ``(partition, offset)`` to when it entered Kafka (unix seconds); a signal found there
    is written with that time instead of its own."""
    at = (ingested_at or {}).get
    wire = [s.to_dict(at((s.partition, s.offset), 0.0)) for s in signals]
    return orjson.dumps({"format": SIGNALS_FORMAT, "item_id": item_id, "signals": wire})


def encode_bundle(
    groups: Sequence[tuple[str, Sequence[ItemSignal]]],
    ingested_at: Mapping[tuple[int, int], float] | None = None,
) -> bytes:
    """The value of one bundle (``format`` 2; key: the first item's id) holding each
    ``(item id, signals)`` group in order; ``ingested_at`` as for
    :func:`encode_item_record`. Round 8's workers wrote these; the tests write them to
    check that they are still read."""
    at = (ingested_at or {}).get
    items = [
        {
            "item_id": item_id,
            "signals": [s.to_wire(at((s.partition, s.offset), 0.0)) for s in group],
        }
        for item_id, group in groups
    ]
    return orjson.dumps({"format": BUNDLE_FORMAT, "items": items})


def encode_fusion_record(feedback: Sequence[FusionFeedback]) -> bytes:
    """The value of one fusion feedback record (key: :data:`FUSION_KEY`)."""
    return orjson.dumps({"format": SIGNALS_FORMAT, "fusion": [f.to_dict() for f in feedback]})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _index(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _item_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_CHARS:
        return None
    return value if value.isprintable() else None


def _parse_source(obj: Any) -> tuple[int, int, float] | str:
    if not isinstance(obj, Mapping):
        return "bad_type:signal"
    partition, offset = _index(obj.get("p")), _index(obj.get("o"))
    if partition is None or offset is None:
        return "bad_source"
    ingested_at = _number(obj.get("at", 0.0))
    if ingested_at is None:
        return "bad_type:at"
    return partition, offset, ingested_at


def _parse_fusion_record(
    obj: Mapping[str, Any], raw: bytes, fusion_width: int | None
) -> SignalRecord | Rejected:
    """The fusion-feedback :class:`SignalRecord` in a record keyed ``FUSION_KEY``, or the
    reason it is refused (``missing_field:fusion``, ``bad_type:g``, ``bad_value:g``,
    ``wrong_width``, or a source reason)."""
    entries = obj.get("fusion")
    if not isinstance(entries, list):
        return Rejected("missing_field:fusion", "fusion must be a list", raw)
    feedback: list[FusionFeedback] = []
    for entry in entries:
        source = _parse_source(entry)
        if isinstance(source, str):
            return Rejected(source, "fusion feedback source", raw)
        gradient = entry.get("g")
        if not isinstance(gradient, list) or not gradient:
            return Rejected("bad_type:g", "g must be a non-empty list of numbers", raw)
        values = [_number(g) for g in gradient]
        if any(v is None for v in values):
            return Rejected("bad_value:g", "g holds a non-number or non-finite value", raw)
        if fusion_width is not None and len(values) != fusion_width:
            return Rejected("wrong_width", f"{len(values)} features, expected {fusion_width}", raw)
        feedback.append(
            FusionFeedback(source[0], source[1], source[2], tuple(float(v or 0.0) for v in values))
        )
    return SignalRecord(None, fusion=tuple(feedback))


def _parse_partner(entry: list[Any], item_id: str) -> ItemSignal | str:
    """A partner's signal in its array form (:meth:`ItemSignal.to_wire`), or why not."""
    if len(entry) != 6:
        return "bad_type:signal"
    partition, offset = _index(entry[0]), _index(entry[1])
    if partition is None or offset is None:
        return "bad_source"
    ts, at = _number(entry[2]), _number(entry[3])
    if ts is None:
        return "bad_type:ts"
    if at is None:
        return "bad_type:at"
    other, amount = _item_id(entry[4]), _number(entry[5])
    if other is None or other == item_id or amount is None or amount <= 0:
        return "bad_pair"
    signal = (item_id, partition, offset, ts, at, 0.0, 0.0, ((other, amount),))
    return tuple.__new__(ItemSignal, signal)


def _parse_item_signals(
    obj: Mapping[str, Any], key_str: str, raw: bytes, *, bundled: bool = False
) -> SignalRecord | Rejected:
    """The item's :class:`SignalRecord` in a record keyed by item id (or an entry of a
    bundle, whose partner signals may be arrays), or the reason it is refused
    (``bad_type:item_id``, ``key_mismatch``, ``missing_field:signals``, ``bad_type:ts``,
    ``bad_value:n``, ``bad_value:w``, ``bad_type:pairs``, ``bad_pair``, or a source
    reason)."""
    item_id = _item_id(obj.get("item_id"))
    if item_id is None:
        return Rejected("bad_type:item_id", "item_id must be a printable string", raw)
    if item_id != key_str:
        return Rejected("key_mismatch", f"key {key_str!r} != item_id {item_id!r}", raw)
    entries = obj.get("signals")
    if not isinstance(entries, list):
        return Rejected("missing_field:signals", "signals must be a list", raw)
    signals: list[ItemSignal] = []
    for entry in entries:
        if bundled and type(entry) is list:
            partner = _parse_partner(entry, item_id)
            if isinstance(partner, str):
                return Rejected(partner, f"partner signal {entry!r:.80}", raw)
            signals.append(partner)
            continue
        source = _parse_source(entry)
        if isinstance(source, str):
            return Rejected(source, "signal source", raw)
        ts = _number(entry.get("ts"))
        if ts is None:
            return Rejected("bad_type:ts", "ts must be a finite number (seconds)", raw)
        count, weight = _number(entry.get("n", 0.0)), _number(entry.get("w", 0.0))
        if count is None or count < 0:
            return Rejected("bad_value:n", "n must be a finite number >= 0", raw)
        if weight is None or weight < 0:
            return Rejected("bad_value:w", "w must be a finite number >= 0", raw)
        raw_pairs = entry.get("pairs", [])
        if not isinstance(raw_pairs, list) or len(raw_pairs) > _MAX_PAIRS:
            return Rejected("bad_type:pairs", "pairs must be a list of [item_id, amount]", raw)
        pairs: list[tuple[str, float]] = []
        for pair in raw_pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                return Rejected("bad_pair", "a pair is [item_id, amount]", raw)
            other, amount = _item_id(pair[0]), _number(pair[1])
            if other is None or other == item_id or amount is None or amount <= 0:
                return Rejected("bad_pair", f"pair {pair!r:.80}", raw)
            pairs.append((other, amount))
        signals.append(
            ItemSignal(item_id, source[0], source[1], ts, source[2], count, weight, tuple(pairs))
        )
    return SignalRecord(item_id, signals=tuple(signals))


def _parse_bundle(
    obj: Mapping[str, Any], key_str: str, raw: bytes
) -> list[SignalRecord | Rejected]:
    """The items' :class:`SignalRecord` values of a bundle, each entry parsed (and refused)
    on its own; the whole bundle is refused when ``items`` is not a non-empty list
    (``missing_field:items``) or the key is not its first item's id (``key_mismatch``)."""
    entries = obj.get("items")
    if not isinstance(entries, list) or not entries:
        return [Rejected("missing_field:items", "items must be a non-empty list", raw)]
    first = entries[0]
    if not isinstance(first, Mapping) or first.get("item_id") != key_str:
        return [Rejected("key_mismatch", f"key {key_str!r} is not the first item's id", raw)]
    parsed: list[SignalRecord | Rejected] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            parsed.append(Rejected("bad_type:entry", "an entry is {item_id, signals}", raw))
            continue
        item_id = entry.get("item_id")
        key = item_id if isinstance(item_id, str) else ""
        parsed.append(_parse_item_signals(entry, key, raw, bundled=True))
    return parsed


def parse_signal_records(
    key: bytes | str | None,
    value: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_SIGNAL_BYTES,
    fusion_width: int | None = None,
) -> list[SignalRecord | Rejected]:
    """What one signals-topic record holds: one :class:`SignalRecord` per item (a bundle
    holds several; each of its entries is refused on its own), the fusion feedback, or
    the reason the whole record is refused (``missing_key``, ``not_json``,
    ``bad_format``, ``key_mismatch``, ``bad_source``, ``bad_pair``, ``bad_value:n``,
    ``wrong_width``...). Never raises."""
    raw = bytes(value) if value is not None else b""
    if key is None:
        return [Rejected("missing_key", "a signals record is keyed by item id", raw)]
    try:
        key_str = key.decode("utf-8") if isinstance(key, bytes | bytearray) else str(key)
    except UnicodeDecodeError:
        return [Rejected("bad_key", "key is not UTF-8", raw)]
    if value is None:
        return [Rejected("tombstone", "a signals record has a value", raw)]
    if len(raw) > max_bytes:
        return [Rejected("record_too_large", f"{len(raw)} bytes > {max_bytes}", raw)]
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [Rejected("not_json", str(exc)[:200], raw)]
    if not isinstance(obj, Mapping):
        return [Rejected("not_object", "a signals record is a JSON object", raw)]
    form = obj.get("format")
    if form == COLUMNS_FORMAT and key_str != FUSION_KEY:
        from interest_core.signal_columns import parse_columns  # it builds on this module

        return parse_columns(obj, key_str, raw)
    if form == BUNDLE_FORMAT and key_str != FUSION_KEY:
        return _parse_bundle(obj, key_str, raw)
    if form != SIGNALS_FORMAT:
        return [Rejected("bad_format", f"format {form!r}, expected 1, 2 or 3 (bundles)", raw)]
    if key_str == FUSION_KEY:
        return [_parse_fusion_record(obj, raw, fusion_width)]
    return [_parse_item_signals(obj, key_str, raw)]
