"""Item-signal bundles in columns (``format`` 3): what a worker writes to
``interest.item-signals`` since round 9, and how the aggregation reads it.

A worker's positive event names its own item and some 18 partner items (its user's
recent positive history); the signals it teaches (:mod:`interest_core.item_signals`) are
one per item, and each partner's holds only the event's source, its times, the event's
own item and an amount. Written as one JSON object or array per signal (``format`` 2),
they took 1,298 bytes per event and 9 us of the worker's time per event at full batches
(RESULTS.md, round 9). In columns each event's source and times are written once, a
pair is two small integers (an index into the bundle's ids, the rank ``j`` of its
amount ``decay ** j``), and the writer is a few array operations per bundle::

    key: "m1"                               (an item whose signals the bundle holds)
    {"format": 3, "decay": 0.85,
     "items": ["m1", "m7", "m9"],           (every id the bundle names; indices below)
     "events": {"p": [3], "o": [1207], "ts": [1700000000.5], "at": [1700000001.2],
                "item": [0]},               (each event: source, times, its own item)
     "own": {"event": [0], "n": [1.0], "w": [1.5], "end": [2],
             "item": [1, 2], "rank": [0, 1]},
     "partners": {"event": [0], "item": [1], "rank": [0]}}

``own`` rows are own-item signals on items of the bundle's partition (the event's item,
its count ``n`` and weight ``w``, its pairs ``item``/``rank`` sliced by the running
``end``); ``partners`` rows are partner signals on items of the partition (pair: the
event's own item and the amount of rank ``rank``). The reader recomputes the amounts as
the engine multiplies them (:func:`~interest_core.item_signals.decay_powers`), so they
are the same floats. Signals whose amounts are not the powers of one decay (not the
engine's) are written with ``amount`` columns instead of ``decay`` and ``rank``. One
bundle holds a consecutive run of a batch's events (split at a size bound), so every
item's signals keep their event order within a bundle and across the bundles of its
partition.

:func:`parse_columns` refuses a bundle whose columns do not fit together (a reason for
the record) and an item one of whose signals is malformed (a reason for the item, the
other items kept), as the aggregation counts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from interest_core.item_signals import (
    COLUMNS_FORMAT,
    ItemSignal,
    OwnSignals,
    SignalRecord,
    decay_powers,
)
from interest_core.records import Rejected

__all__ = ["COLUMNS_FORMAT", "encode_columns", "parse_columns"]

_MAX_ID_CHARS = 256
_MAX_PAIRS = 10_000
# Bytes a bundle's columns take, roughly: per event named, per own signal, per pair of
# an own signal, per partner signal (numbers as JSON, ids apart); only for the size bound.
_EVENT_BYTES, _OWN_BYTES, _PAIR_BYTES, _PARTNER_BYTES = 60, 16, 12, 14
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Catalog rows up to which the rows of a batch are told apart by a mask over all rows
# (beyond it, and four per mention, by a sort).
_DENSE_ROWS = 1 << 16
_first, _second = itemgetter(0), itemgetter(1)


#: Batches of at most this many pairs are written by plain Python, whose cost grows with
#: the pairs, where the array operations cost some 200 us a batch whatever its size (some
#: 250 calls) and little per pair. Measured on the worker's MovieLens batches with the
#: rows kept (round 15): 254 pairs (16 events) 207 us plain against 237 in arrays, 400
#: pairs (20 events) 305 against 248. (Round 9 chose 24 events, before the rows.)
SMALL_PAIRS = 320


def encode_columns(
    own: Sequence[ItemSignal],
    ingested_at: Mapping[tuple[int, int], float],
    partition_of: Callable[[str], int],
    max_bytes: int,
    *,
    small_pairs: int = SMALL_PAIRS,
) -> list[tuple[str, bytes]]:
    """``(key, value)`` bundles in columns of every signal of the events whose own-item
    signals are ``own`` (one per positive event, in event order, as
    :class:`~interest_core.item_signals.SignalBuffer` keeps them): per partition of the
    items' keys (``partition_of``, in partition order), bundles of consecutive events of
    about ``max_bytes`` at most (more when one event's signals alone pass it).
    ``ingested_at`` maps an event's ``(partition, offset)`` to when it entered Kafka;
    an event found there is written with that time instead of its own."""
    if not own:
        return []
    if _pairs(own) <= small_pairs:
        plain = _encode_small(own, ingested_at, partition_of)
        if all(len(value) <= max_bytes for _, value in plain):
            return plain
    batch = _batch_of(own, ingested_at)
    ids, widths, n = batch.ids, batch.widths, len(own)
    id_partition = np.fromiter(map(partition_of, ids), np.int64, len(ids))
    own_partition = id_partition[batch.event_item]
    partner_partition = id_partition[batch.pair_item]
    out: list[tuple[str, bytes]] = []
    # Each partition's own rows and partner rows, in event order (one stable sort each).
    # (A stable sort of 16-bit keys is a radix sort in numpy: a batch's tens of
    # thousands of pairs in a fraction of a comparison sort's time.)
    keys = np.int16 if len(id_partition) and int(id_partition.max()) < 1 << 15 else np.int64
    own_order = np.argsort(own_partition.astype(keys), kind="stable")
    partner_order = np.argsort(partner_partition.astype(keys), kind="stable")
    own_split = np.cumsum(np.bincount(own_partition, minlength=int(id_partition.max()) + 1))
    partner_split = np.cumsum(np.bincount(partner_partition, minlength=len(own_split)))
    # An id's bytes in the id table, counted for every row that names it: an upper bound
    # (ids may be long: a bundle must stay within the producer's request size).
    id_bytes = np.fromiter((len(i.encode()) + 3 for i in ids), np.int64, len(ids))
    pair_bytes = id_bytes[batch.pair_item]
    own_bytes = _OWN_BYTES + _PAIR_BYTES * widths + id_bytes[batch.event_item]
    own_bytes += np.bincount(batch.pair_event, weights=pair_bytes, minlength=n).astype(np.int64)
    partner_bytes = _PARTNER_BYTES + pair_bytes
    whole = int(own_bytes.sum() + partner_bytes.sum()) + n * _EVENT_BYTES + int(id_bytes.sum())
    for partition in range(len(own_split)):
        rows = own_order[(own_split[partition - 1] if partition else 0) : own_split[partition]]
        partners = partner_order[
            (partner_split[partition - 1] if partition else 0) : partner_split[partition]
        ]
        if not len(rows) and not len(partners):
            continue
        if whole < max_bytes:  # the whole batch fits in one bundle per partition
            out.append(batch.bundle(0, n, rows, partners))
            continue
        # Bytes per event in this partition's bundles; a new bundle where they pass the bound.
        cost = np.bincount(
            batch.pair_event[partners], weights=partner_bytes[partners], minlength=n
        ).astype(np.int64)
        cost[rows] += own_bytes[rows]
        cost += (cost > 0) * _EVENT_BYTES
        cut = np.flatnonzero(np.diff(np.cumsum(cost) // max(1, max_bytes), prepend=0))
        bounds = np.concatenate(([0], cut, [n])).tolist()
        partner_events = batch.pair_event[partners]
        for lo, hi in pairwise(bounds):
            here = rows[(rows >= lo) & (rows < hi)]  # own rows are events
            chosen = partners[(partner_events >= lo) & (partner_events < hi)]
            if len(here) or len(chosen):
                out.append(batch.bundle(lo, hi, here, chosen))
    return out


def _pairs(own: Sequence[ItemSignal]) -> int:
    """The pairs of ``own`` (read from its rows when it keeps them)."""
    if isinstance(own, OwnSignals) and own.located:
        return len(own.pair_rows)
    return sum(len(signal.pairs) for signal in own)


class _SmallBundle:
    """One partition's bundle of a small batch, built row by row."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.events: dict[int, int] = {}
        self.columns: dict[str, list[Any]] = {k: [] for k in ("p", "o", "ts", "at", "item")}
        self.own: dict[str, list[Any]] = {k: [] for k in ("event", "n", "w", "end", "item")}
        self.partners: dict[str, list[Any]] = {k: [] for k in ("event", "item")}
        self.own_amounts: tuple[list[int], list[float]] = ([], [])
        self.partner_amounts: tuple[list[int], list[float]] = ([], [])
        self.key = ""

    def id_of(self, item_id: str) -> int:
        local = self.ids.get(item_id)
        if local is None:
            local = self.ids[item_id] = len(self.ids)
        return local

    def event(self, e: int, head: tuple[int, int, float, float], item_id: str) -> int:
        local = self.events.get(e)
        if local is None:
            local = self.events[e] = len(self.events)
            for name, value in zip(("p", "o", "ts", "at"), head, strict=True):
                self.columns[name].append(value)
            self.columns["item"].append(self.id_of(item_id))
        return local

    def value(self, decay: float | None) -> bytes:
        which = 1 if decay is None else 0  # amounts as they are, else their ranks
        return _value(
            list(self.ids),
            self.columns,
            (self.own, self.own_amounts[which]),
            (self.partners, self.partner_amounts[which]),
            decay,
        )


def _value(
    items: list[str],
    events: Mapping[str, Any],
    own: tuple[dict[str, Any], Any],
    partners: tuple[dict[str, Any], Any],
    decay: float | None,
) -> bytes:
    """A bundle's record value: its tables, each of ``own`` and ``partners`` with its
    amounts column (ranks of powers of ``decay``, or amounts as they are when None)."""
    amount = "amount" if decay is None else "rank"
    value: dict[str, Any] = {"format": COLUMNS_FORMAT}
    if decay is not None:
        value["decay"] = decay
    value["items"], value["events"] = items, events
    value["own"] = own[0] | {amount: own[1]}
    value["partners"] = partners[0] | {amount: partners[1]}
    return orjson.dumps(value, option=_NUMPY)


def _new_bundle(
    bundles: dict[int, _SmallBundle], item_id: str, partition_of: Callable[[str], int]
) -> _SmallBundle:
    """A new bundle for ``item_id``'s partition, keyed by it (a signal on it comes next)."""
    bundle = bundles[partition_of(item_id)] = _SmallBundle()
    bundle.key = item_id
    return bundle


def _encode_small(
    own: Sequence[ItemSignal],
    ingested_at: Mapping[tuple[int, int], float],
    partition_of: Callable[[str], int],
) -> list[tuple[str, bytes]]:
    """:func:`encode_columns` of a small batch in one bundle per partition, in plain
    Python (the same records as the array path, up to the order of the id tables)."""
    bundles: dict[int, _SmallBundle] = {}
    at_of = ingested_at.get
    decay = next((s.pairs[1][1] for s in own if len(s.pairs) > 1), 1.0)
    powers = decay_powers(decay, 1 + max(len(s.pairs) for s in own), cache=False)
    ranked = 0.0 < decay <= 1.0
    for e, signal in enumerate(own):
        item_id, partition, offset, ts, own_at, count, weight, pairs = signal
        head = (partition, offset, ts, at_of((partition, offset), 0.0) or own_at)
        mine = bundles.get(partition_of(item_id)) or _new_bundle(bundles, item_id, partition_of)
        rows = mine.own
        rows["event"].append(mine.event(e, head, item_id))
        rows["n"].append(count)
        rows["w"].append(weight)
        for j, (other, amount) in enumerate(pairs):
            ranked = ranked and amount == powers[j]
            rows["item"].append(mine.id_of(other))
            mine.own_amounts[0].append(j)
            mine.own_amounts[1].append(amount)
            theirs = bundles.get(partition_of(other)) or _new_bundle(bundles, other, partition_of)
            theirs.partners["event"].append(theirs.event(e, head, item_id))
            theirs.partners["item"].append(theirs.id_of(other))
            theirs.partner_amounts[0].append(j)
            theirs.partner_amounts[1].append(amount)
        rows["end"].append(len(rows["item"]))
    chosen = decay if ranked else None
    return [(bundles[p].key, bundles[p].value(chosen)) for p in sorted(bundles)]


def _batch_of(own: Sequence[ItemSignal], ingested_at: Mapping[tuple[int, int], float]) -> _Batch:
    """The batch's signals as columns (see :class:`_Batch`); from their rows when the
    engine's buffer kept them (:class:`~interest_core.item_signals.OwnSignals`), else
    from their ids."""
    n = len(own)
    pair_amount: tuple[float, np.ndarray] | np.ndarray
    if isinstance(own, OwnSignals) and own.located:
        assert own.own_rows is not None and own.item_ids is not None
        # Read from the rows and heads: no signal is made.
        parts, offsets, ts, weights = zip(*own.heads, strict=True)
        own_at: Any = 0.0  # an own signal's (the engine stamps none)
        counts: Any = np.ones(n, dtype=np.float64)
        pair_end = np.asarray(own.ends, dtype=np.int64)
        widths = np.diff(pair_end, prepend=0)
        ids, event_item, pair_item = _ids_of_rows(own.own_rows, own.pair_rows, own.item_ids)
        if len(pair_item) != int(pair_end[-1]):
            raise ValueError(f"{len(pair_item)} pair rows for {int(pair_end[-1])} pairs")
        # Each event's j-th pair has decay ** j (OwnSignals._signal): what
        # _amounts finds from the amounts, without reading them.
        rank = np.arange(len(pair_item)) - np.repeat(pair_end - widths, widths)
        if not len(rank):
            pair_amount = np.zeros(0, dtype=np.float64)
        else:
            pair_amount = (own.decay if bool((rank == 1).any()) else 1.0, rank)
    else:
        names, parts, offsets, ts, own_at, counts, weights, pairs = zip(*own, strict=True)
        widths = np.fromiter(map(len, pairs), np.int64, n)
        pair_end = np.cumsum(widths)
        flat = list(chain.from_iterable(pairs))
        ids = list(dict.fromkeys(chain(names, map(_first, flat))))
        index = {item: i for i, item in enumerate(ids)}.__getitem__
        event_item = np.fromiter(map(index, names), np.int64, n)
        pair_item = np.fromiter(map(index, map(_first, flat)), np.int64, len(flat))
        pair_amount = _amounts(
            np.fromiter(map(_second, flat), np.float64, len(flat)), widths, pair_end
        )
    at_of = ingested_at.get
    stamped = np.fromiter((at_of(s, 0.0) for s in zip(parts, offsets, strict=True)), np.float64, n)
    return _Batch(
        ids=ids,
        event_item=event_item,
        events={
            "p": np.asarray(parts, np.int64),
            "o": np.asarray(offsets, np.int64),
            "ts": np.asarray(ts, np.float64),
            "at": np.where(stamped != 0.0, stamped, own_at),
        },
        count=np.asarray(counts, np.float64),
        weight=np.asarray(weights, np.float64),
        widths=widths,
        pair_end=pair_end,
        pair_item=pair_item,
        pair_event=np.repeat(np.arange(n), widths),
        pair_amount=pair_amount,
    )


def _ids_of_rows(
    own_rows: Sequence[int], pair_rows: Sequence[int], item_ids: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(ids, event_item, pair_item)`` of events on ``own_rows`` with pairs on
    ``pair_rows``: the ids of the rows mentioned, by row, and each row's index among them
    (rows and ids map one to one). Without a sort while the catalog is not much larger
    than the batch's mentions: a mask over rows and its running count."""
    every = np.concatenate(
        (np.asarray(own_rows, dtype=np.int64), np.asarray(pair_rows, dtype=np.int64))
    )
    if len(item_ids) <= 4 * len(every) + _DENSE_ROWS:
        mentioned = np.zeros(len(item_ids), dtype=bool)
        mentioned[every] = True
        distinct = np.flatnonzero(mentioned)
        local = (np.cumsum(mentioned) - 1)[every]
    else:
        distinct, inverse = np.unique(every, return_inverse=True)
        local = inverse.reshape(-1)
    ids = [item_ids[row] for row in distinct.tolist()]
    return ids, local[: len(own_rows)], local[len(own_rows) :]


def _amounts(
    amounts: np.ndarray, widths: np.ndarray, pair_end: np.ndarray
) -> tuple[float, np.ndarray] | np.ndarray:
    """The pairs' amounts as ``(decay, rank)`` when each event's ``j``-th pair has
    ``decay ** j`` (as the engine's events do, the powers multiplied in turn: see
    :func:`~interest_core.item_signals.event_signal`), else as they are."""
    rank = np.arange(len(amounts)) - np.repeat(pair_end - widths, widths)
    first = np.flatnonzero(rank == 1)
    decay = float(amounts[first[0]]) if len(first) else 1.0
    if len(amounts) and 0.0 < decay <= 1.0:
        powers = np.asarray(decay_powers(decay, int(rank.max()) + 1, cache=False))
        if np.array_equal(powers[rank], amounts):
            return decay, rank
    return amounts


@dataclass(frozen=True, slots=True)
class _Batch:
    """A batch's signals as columns (indices into ``ids`` and into the events), from
    which its bundles are cut. ``pair_amount`` is ``(decay, rank)`` or the amounts."""

    ids: list[str]
    event_item: np.ndarray
    events: dict[str, np.ndarray]
    count: np.ndarray
    weight: np.ndarray
    widths: np.ndarray
    pair_end: np.ndarray
    pair_item: np.ndarray
    pair_event: np.ndarray
    pair_amount: tuple[float, np.ndarray] | np.ndarray

    def bundle(self, lo: int, hi: int, rows: np.ndarray, chosen: np.ndarray) -> tuple[str, bytes]:
        """The bundle of events ``lo:hi``: the own signals of events ``rows`` and the
        partner signals of pairs ``chosen`` (indices into the batch's columns)."""
        event_item, pair_item = self.event_item, self.pair_item
        # the own signals' pairs, in order: ranges [end - width, end) of the pair columns
        span = self.widths[rows]
        starts, placed = self.pair_end[rows] - span, np.cumsum(span) - span
        own_pairs = np.arange(int(span.sum())) + np.repeat(starts - placed, span)
        # The events and ids this bundle names, and their places in it.
        in_bundle = np.zeros(hi - lo, dtype=bool)
        in_bundle[rows - lo] = True
        in_bundle[self.pair_event[chosen] - lo] = True
        events = np.flatnonzero(in_bundle) + lo
        place = np.cumsum(in_bundle) - 1
        named = np.zeros(len(self.ids), dtype=bool)
        for used in (event_item[events], pair_item[own_pairs], pair_item[chosen]):
            named[used] = True
        local = np.cumsum(named) - 1
        own_cols: dict[str, Any] = {
            "event": place[rows - lo],
            "n": self.count[rows],
            "w": self.weight[rows],
            "end": np.cumsum(span),
            "item": local[pair_item[own_pairs]],
        }
        partner_cols: dict[str, Any] = {
            "event": place[self.pair_event[chosen] - lo],
            "item": local[pair_item[chosen]],
        }
        if isinstance(self.pair_amount, tuple):
            decay, amounts = self.pair_amount
        else:
            decay, amounts = None, self.pair_amount
        ids = self.ids
        events_named = {name: column[events] for name, column in self.events.items()}
        events_named["item"] = local[event_item[events]]
        value = _value(
            [ids[i] for i in np.flatnonzero(named).tolist()],
            events_named,
            (own_cols, amounts[own_pairs]),
            (partner_cols, amounts[chosen]),
            decay,
        )
        key = ids[int(event_item[rows[0]])] if len(rows) else ids[int(pair_item[chosen[0]])]
        return key, value


# ---------------------------------------------------------------------------- reading


def _ints(column: Any) -> list[int] | None:
    """``column`` when it is a list of non-negative integers (not booleans), else None."""
    if not isinstance(column, list) or not all(type(v) is int and v >= 0 for v in column):
        return None
    return column


def _numbers(column: Any) -> list[float] | None:
    """``column`` as floats when it is a list of numbers (not booleans), else None; the
    values may be non-finite (checked per signal)."""
    if not isinstance(column, list) or not all(type(v) is float or type(v) is int for v in column):
        return None
    return [float(v) for v in column]


def _table(obj: Any, ints: Sequence[str], numbers: Sequence[str]) -> dict[str, list[Any]] | None:
    """The columns ``ints`` and ``numbers`` of ``obj``, all of one length, or None."""
    if not isinstance(obj, Mapping):
        return None
    table: dict[str, list[Any]] = {}
    for name in ints:
        column = _ints(obj.get(name))
        if column is None:
            return None
        table[name] = column
    for name in numbers:
        values = _numbers(obj.get(name))
        if values is None:
            return None
        table[name] = values
    return table


def _columns(
    obj: Mapping[str, Any],
) -> tuple[list[str], dict[str, list[Any]], dict[str, list[Any]], dict[str, list[Any]]] | str:
    """The bundle's id table and its three tables, checked to fit together, or why not."""
    ids = obj.get("items")
    if not isinstance(ids, list) or not all(
        isinstance(i, str) and 0 < len(i) <= _MAX_ID_CHARS and i.isprintable() for i in ids
    ):
        return "bad_type:items"
    events = _table(obj.get("events"), ("p", "o", "item"), ("ts", "at"))
    by_rank = "decay" in obj  # amounts as powers of one decay (the engine's), else as they are
    amount = ((), ("amount",)) if not by_rank else (("rank",), ())
    own = _table(obj.get("own"), ("event", "end", "item", *amount[0]), ("n", "w", *amount[1]))
    partners = _table(obj.get("partners"), ("event", "item", *amount[0]), amount[1])
    if events is None or own is None or partners is None:
        return "bad_columns"
    if by_rank:
        decay = obj.get("decay")
        ranks = chain(own["rank"], partners["rank"])
        if (
            type(decay) is not float
            or not 0.0 < decay <= 1.0
            or any(r >= _MAX_PAIRS for r in ranks)
        ):
            return "bad_columns"
        top = max(chain(own["rank"], partners["rank"]), default=0)
        powers = decay_powers(decay, 1 + top, cache=False)
        own["amount"] = [powers[r] for r in own.pop("rank")]
        partners["amount"] = [powers[r] for r in partners.pop("rank")]
    lengths_fit = (
        len({len(c) for c in events.values()}) == 1
        and len({len(own[c]) for c in ("event", "end", "n", "w")}) == 1
        and len(own["item"]) == len(own["amount"])
        and len({len(c) for c in partners.values()}) == 1
    )
    ends = own["end"]
    if not lengths_fit or any(b < a for a, b in zip([0, *ends], ends, strict=False)):
        return "bad_columns"
    if (ends[-1] if ends else 0) != len(own["item"]):
        return "bad_columns"
    n_events, n_ids = len(events["p"]), len(ids)
    in_range = all(i < n_ids for i in chain(events["item"], own["item"], partners["item"])) and all(
        e < n_events for e in chain(own["event"], partners["event"])
    )
    return (ids, events, own, partners) if in_range else "bad_index"


def _event_signal_head(events: dict[str, list[Any]], e: int) -> tuple[int, int, float, float] | str:
    ts, at = events["ts"][e], events["at"][e]
    if not math.isfinite(ts):
        return "bad_type:ts"
    if not math.isfinite(at):
        return "bad_type:at"
    return events["p"][e], events["o"][e], ts, at


def _own_signal(
    item_id: str,
    head: tuple[int, int, float, float] | str,
    count: float,
    weight: float,
    pairs: tuple[tuple[str, float], ...],
) -> ItemSignal | str:
    """An own-item signal from its checked parts, or why it is malformed."""
    if isinstance(head, str):
        return head
    if not (math.isfinite(count) and count >= 0):
        return "bad_value:n"
    if not (math.isfinite(weight) and weight >= 0):
        return "bad_value:w"
    if len(pairs) > _MAX_PAIRS:
        return "bad_type:pairs"
    if not all(other != item_id and math.isfinite(a) and a > 0 for other, a in pairs):
        return "bad_pair"
    # tuple.__new__ skips the named tuple's Python-level __new__ (one per signal read)
    return tuple.__new__(ItemSignal, (item_id, *head, count, weight, pairs))


def parse_columns(
    obj: Mapping[str, Any], key_str: str, raw: bytes
) -> list[SignalRecord | Rejected]:
    """The items' :class:`SignalRecord` values of a bundle in columns, each item's signals
    in event order; an item with a malformed signal is refused on its own (``bad_type:ts``,
    ``bad_type:at``, ``bad_value:n``, ``bad_value:w``, ``bad_pair``), the whole bundle when
    its columns do not fit together (``bad_type:items``, ``bad_columns``, ``bad_index``)
    or ``key_str`` is none of the items it holds signals on (``key_mismatch``)."""
    parsed = _columns(obj)
    if isinstance(parsed, str):
        return [Rejected(parsed, "the bundle's columns do not fit together", raw)]
    ids, events, own, partners = parsed
    heads = [_event_signal_head(events, e) for e in range(len(events["p"]))]
    event_item = events["item"]
    found: dict[str, list[tuple[int, ItemSignal | str]]] = {}
    start = 0
    for row, e in enumerate(own["event"]):
        end = own["end"][row]
        item_id = ids[event_item[e]]
        others = [ids[i] for i in own["item"][start:end]]
        pairs = tuple(zip(others, own["amount"][start:end], strict=True))
        start = end
        signal = _own_signal(item_id, heads[e], own["n"][row], own["w"][row], pairs)
        found.setdefault(item_id, []).append((e, signal))
    for e, i, amount in zip(partners["event"], partners["item"], partners["amount"], strict=True):
        item_id, other, head = ids[i], ids[event_item[e]], heads[e]
        if isinstance(head, str):
            partner: ItemSignal | str = head
        elif other == item_id or not (math.isfinite(amount) and amount > 0):
            partner = "bad_pair"
        else:
            partner = tuple.__new__(ItemSignal, (item_id, *head, 0.0, 0.0, ((other, amount),)))
        found.setdefault(item_id, []).append((e, partner))
    if key_str not in found:
        return [Rejected("key_mismatch", f"key {key_str!r} holds no signal in the bundle", raw)]
    out: list[SignalRecord | Rejected] = []
    for item_id, rows in found.items():
        rows.sort(key=_first)  # own and partner rows of one item, in event order
        bad = next((s for _, s in rows if isinstance(s, str)), None)
        if bad is not None:
            out.append(Rejected(bad, f"a signal of item {item_id!r:.80}", raw))
            continue
        out.append(SignalRecord(item_id, signals=tuple(s for _, s in rows)))  # type: ignore[misc]
    return out
