"""``interest generate``: a synthetic catalog and an event log whose users change tastes.

Each user holds a few tastes (categories). At one or two drift points per user, one
taste is replaced by a category the user never held, and the new taste is the user's
strongest for the rest of the log. Most events (views, clicks, carts, purchases,
ratings, reviews, searches and chat messages in plain English) are about a current
taste; a few are skips and dislikes of items outside them. ``truth.jsonl`` records, per
user, the tastes in force over each half-open period ``[from_ts, to_ts)``, so an
evaluation can check that interest capture follows the drift.

The same arguments (``seed`` included) always give byte-identical files.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import logging
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from interest_core.settings import Settings
from producers.jsonl import write_jsonl
from producers.synthetic_vocab import CATEGORIES, CategoryVocab

__all__ = [
    "BAD_LINE_KINDS",
    "GenerateSummary",
    "SyntheticData",
    "configure",
    "generate",
    "generate_dataset",
    "run",
]

log = logging.getLogger(__name__)

DEFAULT_START_TS = 1_700_000_000.0  # 2023-11-14T22:13:20Z
#: Kinds of malformed lines ``bad_fraction`` injects, cycled in this order.
BAD_LINE_KINDS: tuple[str, ...] = (
    "not_json",
    "missing_user_id",
    "bad_ts",
    "unknown_type",
    "text_too_long",
    "bad_rating",
    "not_object",
)
# Share of events that are a skip or dislike of an item outside the user's tastes.
_NEGATIVE_SHARE = 0.06
# Positive event mix (relative weights) for events about a current taste.
_MIX: tuple[tuple[str, float], ...] = (
    ("view", 0.34),
    ("click", 0.20),
    ("search", 0.10),
    ("add_to_cart", 0.07),
    ("rate", 0.07),
    ("chat", 0.07),
    ("purchase", 0.04),
    ("review", 0.04),
)
# How much stronger a freshly acquired taste is than the older ones (relative weight).
_NEW_TASTE_WEIGHT = 2.0
_CHAT = (
    "I'm looking for {want}.",
    "Can you recommend {want}?",
    "Lately I've been really into {topic}, any suggestions?",
    "What would you suggest for {want} under $50?",
    "Show me more like the {topic} I liked last week.",
    "My friend loves {topic}; I need {want} as a gift.",
)
_REVIEW = ("{praise}.", "Really happy with this {kind}: {praise}.", "{praise}, would buy again.")
_DEVICES = ("mobile", "desktop", "tablet")


@dataclass
class SyntheticData:
    """The generated records, in memory: catalog items, events (time order), truth rows."""

    catalog: list[dict[str, Any]]
    events: list[dict[str, Any]]
    truth: list[dict[str, Any]]
    #: Malformed lines to interleave: ``(insert_after_event_index, line_bytes)``.
    bad_lines: list[tuple[int, bytes]] = field(default_factory=list)

    def event_lines(self) -> list[bytes]:
        """The events file's lines: events in time order with the bad lines interleaved."""
        after: dict[int, list[bytes]] = {}
        for position, line in self.bad_lines:
            after.setdefault(position, []).append(line)
        lines: list[bytes] = []
        for index, event in enumerate(self.events):
            lines.append(orjson.dumps(event))
            lines.extend(after.get(index, ()))
        return lines


@dataclass
class GenerateSummary:
    """What :func:`generate` wrote."""

    catalog_path: Path
    events_path: Path
    truth_path: Path
    items: int
    events_by_type: Counter[str]
    bad_lines: int
    users: int
    truth_rows: int

    @property
    def events(self) -> int:
        return sum(self.events_by_type.values())

    def report(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.events_by_type.items()))
        out = [
            f"  {self.catalog_path}: {self.items} items in {len(CATEGORIES)} categories",
            f"  {self.events_path}: {self.events} events of {self.users} users ({kinds})",
            f"  {self.truth_path}: {self.truth_rows} taste periods",
        ]
        if self.bad_lines:
            out.append(f"  plus {self.bad_lines} malformed lines in the events file")
        return "\n".join(out)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _make_item(
    rng: random.Random, index: int, vocab: CategoryVocab, seen: set[str]
) -> dict[str, Any]:
    title = f"{rng.choice(vocab.first)} {rng.choice(vocab.second)}"
    if title in seen:
        title = next(
            f"{title}, Vol. {n}" for n in itertools.count(2) if f"{title}, Vol. {n}" not in seen
        )
    seen.add(title)
    kind = rng.choice(vocab.kinds)
    first, second = rng.sample(vocab.features, 2)
    return {
        "item_id": f"i{index:05d}",
        "title": title,
        "description": f"{_capitalise(kind)} {first}, {second}.",
        "category": vocab.name,
        "tags": rng.sample(vocab.tags, 3),
        "image_caption": _capitalise(rng.choice(vocab.captions)) + ".",
    }


def _catalog(rng: random.Random, items: int) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Items spread round-robin over the categories; also each category's item indexes."""
    seen: set[str] = set()
    catalog: list[dict[str, Any]] = []
    by_category: list[list[int]] = [[] for _ in CATEGORIES]
    for index in range(items):
        slot = index % len(CATEGORIES)
        catalog.append(_make_item(rng, index, CATEGORIES[slot], seen))
        by_category[slot].append(index)
    return catalog, by_category


def _user_times(rng: random.Random, n: int, start_ts: float, horizon_s: float) -> list[float]:
    """``n`` event times (seconds) grouped in sessions of a few minutes, sorted."""
    sessions = sorted(rng.uniform(0.0, horizon_s * 0.98) for _ in range(max(1, n // 8)))
    times = [
        start_ts + rng.choice(sessions) + rng.uniform(0.0, 0.02 * horizon_s / len(sessions))
        for _ in range(n)
    ]
    return sorted(round(t, 3) for t in times)


def _drift_plan(
    rng: random.Random, times: list[float], tastes: int
) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """Drift times and the tastes (category slots, weights) in force in each period."""
    n = len(times)
    drifts = 0 if n < 12 else rng.choice((1, 1, 2))
    cuts = sorted(
        int(n * (k + 1) / (drifts + 1) + rng.uniform(-0.08, 0.08) * n) for k in range(drifts)
    )
    held = rng.sample(range(len(CATEGORIES)), tastes)
    ever = set(held)
    weights = [1.0] * tastes
    periods = [list(held)]
    period_weights = [list(weights)]
    boundaries: list[float] = []
    for cut in cuts:
        cut = min(max(cut, 1), n - 1)
        fresh = [c for c in range(len(CATEGORIES)) if c not in ever]
        if not fresh or times[cut] == times[cut - 1]:
            continue
        new = rng.choice(fresh)
        replaced = rng.randrange(len(held))
        held[replaced] = new
        weights = [1.0] * len(held)
        weights[replaced] = _NEW_TASTE_WEIGHT
        ever.add(new)
        boundaries.append(round((times[cut - 1] + times[cut]) / 2, 3))
        periods.append(list(held))
        period_weights.append(list(weights))
    return boundaries, periods, period_weights


def _text_for(rng: random.Random, kind: str, vocab: CategoryVocab) -> str:
    if kind == "search":
        query = rng.choice(vocab.queries)
        tag = rng.choice(vocab.tags)
        return query if rng.random() < 0.7 or tag in query else f"{query} {tag}"
    if kind == "chat":
        return rng.choice(_CHAT).format(want=rng.choice(vocab.wants), topic=vocab.name.lower())
    return _capitalise(
        rng.choice(_REVIEW).format(praise=rng.choice(vocab.praise), kind=rng.choice(vocab.kinds))
    )


def _bad_line(rng: random.Random, kind: str, user_id: str, ts: float, item_id: str) -> bytes:
    if kind == "not_json":
        return orjson.dumps({"user_id": user_id, "ts": ts, "type": "view"})[:-7]
    if kind == "missing_user_id":
        return orjson.dumps({"ts": ts, "type": "click", "item_id": item_id})
    if kind == "bad_ts":
        return orjson.dumps(
            {"user_id": user_id, "ts": "yesterday", "type": "view", "item_id": item_id}
        )
    if kind == "unknown_type":
        return orjson.dumps({"user_id": user_id, "ts": ts, "type": "teleport", "item_id": item_id})
    if kind == "text_too_long":
        words = " ".join(
            rng.choice(("please", "help", "me", "find", "something")) for _ in range(600)
        )
        return orjson.dumps({"user_id": user_id, "ts": ts, "type": "chat", "text": words})
    if kind == "bad_rating":
        return orjson.dumps(
            {"user_id": user_id, "ts": ts, "type": "rate", "item_id": item_id, "rating": 11}
        )
    return b'["not", "an", "object"]'


def _check_arguments(
    users: int, items: int, events: int, tastes: int, bad_fraction: float, days: float
) -> None:
    """Raise ``ValueError`` on arguments no dataset can satisfy."""
    if users < 1 or events < 1:
        raise ValueError("users and events must be at least 1")
    if items < len(CATEGORIES):
        raise ValueError(f"items must be at least {len(CATEGORIES)} (one per category)")
    if not 1 <= tastes < len(CATEGORIES):
        raise ValueError(f"tastes must be between 1 and {len(CATEGORIES) - 1}")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad_fraction must be in [0, 1)")
    if days <= 0:
        raise ValueError("days must be positive")


@dataclass(frozen=True)
class _DriftPlan:
    """A user's taste periods: ``boundaries`` (unix seconds) between ``periods`` (held
    category indices), with the categories' ``weights`` per period."""

    boundaries: list[float]
    periods: list[list[int]]
    weights: list[list[float]]


def _truth_periods(
    user_id: str, edges: list[float], periods: list[list[int]], weights: list[list[float]]
) -> list[dict[str, Any]]:
    """The truth rows of one user: per period, its span and tastes, strongest first."""
    out = []
    for k, held in enumerate(periods):
        ordered = sorted(zip(weights[k], held, strict=True), key=lambda p: (-p[0], p[1]))
        out.append(
            {
                "user_id": user_id,
                "from_ts": edges[k],
                "to_ts": edges[k + 1],
                "tastes": [CATEGORIES[c].name for _, c in ordered],
                "weights": [w for w, _ in ordered],
            }
        )
    return out


def _user_events(
    rng: random.Random,
    user_id: str,
    times: list[float],
    plan: _DriftPlan,
    pick_item: Callable[[int], str],
) -> Iterator[tuple[float, dict[str, Any]]]:
    """One user's events at ``times``, drawn from the tastes held at each time: mostly
    interactions in a held category, sometimes a skip or dislike outside them."""
    mix_kinds = [kind for kind, _ in _MIX]
    mix_cum = list(itertools.accumulate(w for _, w in _MIX))
    context = {"device": rng.choice(_DEVICES), "locale": "en-US"}
    period = 0
    for ts in times:
        while period < len(plan.boundaries) and ts >= plan.boundaries[period]:
            period += 1
        held = plan.periods[period]
        event: dict[str, Any] = {"event_id": "", "user_id": user_id, "ts": ts}
        if rng.random() < _NEGATIVE_SHARE:
            outside = [c for c in range(len(CATEGORIES)) if c not in held]
            event["type"] = "skip" if rng.random() < 0.7 else "dislike"
            event["item_id"] = pick_item(rng.choice(outside))
        else:
            category = rng.choices(held, weights=plan.weights[period])[0]
            vocab = CATEGORIES[category]
            kind = mix_kinds[bisect.bisect_left(mix_cum, rng.random() * mix_cum[-1])]
            event["type"] = kind
            if kind not in ("search", "chat"):
                event["item_id"] = pick_item(category)
            if kind in ("search", "chat", "review"):
                event["text"] = _text_for(rng, kind, vocab)
            if kind == "rate":
                event["rating"] = rng.choice((3.5, 4.0, 4.0, 4.5, 5.0, 5.0))
        event["context"] = dict(context)
        yield ts, event


def generate_dataset(
    *,
    users: int = 1000,
    items: int = 2000,
    events: int = 100_000,
    seed: int = 0,
    start_ts: float = DEFAULT_START_TS,
    days: float = 30.0,
    tastes: int = 3,
    bad_fraction: float = 0.0,
) -> SyntheticData:
    """Generate a catalog, a drifting event log and its ground truth, in memory.

    ``days`` is the span of the log (days from ``start_ts``, unix seconds); ``tastes``
    is how many categories each user holds at once; ``bad_fraction`` adds
    ``round(events * bad_fraction)`` malformed lines (see :data:`BAD_LINE_KINDS`).
    Deterministic for given arguments. Raises ``ValueError`` on impossible arguments.
    """
    _check_arguments(users, items, events, tastes, bad_fraction, days)
    rng = random.Random(seed)
    horizon_s = days * 86400.0
    end_ts = start_ts + horizon_s
    catalog, by_category = _catalog(rng, items)
    # Popularity inside a category follows a Zipf-like curve (cumulative weights).
    popularity = [
        list(itertools.accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(len(members))))
        for members in by_category
    ]
    activity = [rng.lognormvariate(0.0, 0.8) for _ in range(users)]
    owner_of_event = rng.choices(range(users), weights=activity, k=events)
    counts = Counter(owner_of_event)

    def pick_item(category: int) -> str:
        members = by_category[category]
        index = bisect.bisect_left(popularity[category], rng.random() * popularity[category][-1])
        return str(catalog[members[min(index, len(members) - 1)]]["item_id"])

    rows: list[tuple[float, int, dict[str, Any]]] = []
    truth: list[dict[str, Any]] = []
    for user in range(users):
        n = counts.get(user, 0)
        if n == 0:
            continue
        user_id = f"u{user}"
        times = _user_times(rng, n, start_ts, horizon_s)
        boundaries, periods, weights = _drift_plan(rng, times, tastes)
        truth.extend(_truth_periods(user_id, [start_ts, *boundaries, end_ts], periods, weights))
        plan = _DriftPlan(boundaries, periods, weights)
        for seq, (ts, event) in enumerate(_user_events(rng, user_id, times, plan, pick_item)):
            rows.append((ts, user * 1_000_000 + seq, event))
    rows.sort(key=lambda row: (row[0], row[1]))
    ordered_events = [event for _, _, event in rows]
    for number, event in enumerate(ordered_events):
        event["event_id"] = f"e-{number}"
    bad: list[tuple[int, bytes]] = []
    for k in range(round(events * bad_fraction)):
        position = rng.randrange(len(ordered_events))
        near = ordered_events[position]
        kind = BAD_LINE_KINDS[k % len(BAD_LINE_KINDS)]
        bad.append((position, _bad_line(rng, kind, near["user_id"], near["ts"], pick_item(0))))
    return SyntheticData(catalog=catalog, events=ordered_events, truth=truth, bad_lines=bad)


def generate(out_dir: str | Path, **options: Any) -> GenerateSummary:
    """Generate a dataset (see :func:`generate_dataset` for ``options``) and write it.

    Writes ``catalog.jsonl``, ``events.jsonl`` and ``truth.jsonl`` under ``out_dir``.
    """
    data = generate_dataset(**options)
    out = Path(out_dir)
    summary = GenerateSummary(
        catalog_path=out / "catalog.jsonl",
        events_path=out / "events.jsonl",
        truth_path=out / "truth.jsonl",
        items=len(data.catalog),
        events_by_type=Counter(e["type"] for e in data.events),
        bad_lines=len(data.bad_lines),
        users=len({row["user_id"] for row in data.truth}),
        truth_rows=len(data.truth),
    )
    write_jsonl(summary.catalog_path, data.catalog)
    write_jsonl(summary.events_path, data.event_lines())
    write_jsonl(summary.truth_path, data.truth)
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1000, help="number of users (default 1000)")
    parser.add_argument("--items", type=int, default=2000, help="catalog size (default 2000)")
    parser.add_argument("--events", type=int, default=100_000, help="events (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--days", type=float, default=30.0, help="span of the log in days (default 30)"
    )
    parser.add_argument(
        "--start-ts", type=float, default=DEFAULT_START_TS, help="first event time, unix seconds"
    )
    parser.add_argument(
        "--tastes", type=int, default=3, help="categories a user holds at once (default 3)"
    )
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help="add this fraction of malformed lines to the events file, for dead-letter demos (default 0)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="data/synthetic",
        help="output directory (default data/synthetic)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        summary = generate(
            args.out,
            users=args.users,
            items=args.items,
            events=args.events,
            seed=args.seed,
            start_ts=args.start_ts,
            days=args.days,
            tastes=args.tastes,
            bad_fraction=args.bad_fraction,
        )
    except ValueError as exc:
        print(f"interest generate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"interest generate: {exc}", file=sys.stderr)
        return 1
    print(f"synthetic data (seed {args.seed}) written:")
    print(summary.report())
    return 0
