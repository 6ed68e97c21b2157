"""``interest eval``: prequential evaluation of the recommenders on an event log.

Reads a catalog and an event log (JSONL, the contract's records), then for each
strategy builds the same :class:`~interest_core.engine.Engine` the workers run and
drives it through :func:`interest_core.evaluation.prequential`. The encoder is shared by
all strategies behind a memo keyed by text, so each catalog item (and each distinct event
text) is encoded once per run, in batches. Prints a table, and writes ``--out`` (JSON:
command, configuration, dataset sizes, machine, timings, metrics) and ``--plot`` (PNG).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from consumers.harness.report import command_line, machine_info
from interest_core.encoder import CachedEncoder
from interest_core.evaluation import (
    PrequentialResult,
    TastePeriod,
    TruthTimeline,
    prequential,
    sliding_mean,
    taste_tracking,
)
from interest_core.records import (
    CatalogDeletion,
    CatalogItem,
    Event,
    Rejected,
    UserDeletion,
    parse_catalog,
    parse_event,
)
from interest_core.settings import Settings
from interest_core.strategies import STRATEGIES
from producers.jsonl import read_lines

__all__ = [
    "STRATEGIES",
    "Dataset",
    "EngineRecommender",
    "configure",
    "evaluate",
    "load_dataset",
    "load_truth",
    "run",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Dataset:
    """A parsed catalog and event log, with what was rejected (counted by reason)."""

    items: list[CatalogItem]
    events: list[Event]
    rejected_events: Counter[str]
    rejected_catalog: Counter[str]

    @property
    def users(self) -> int:
        return len({e.user_id for e in self.events})

    def summary(self) -> dict[str, Any]:
        span = (
            (min(e.ts for e in self.events), max(e.ts for e in self.events))
            if self.events
            else (0.0, 0.0)
        )
        return {
            "catalog_items": len(self.items),
            "events": len(self.events),
            "users": self.users,
            "events_by_type": dict(sorted(Counter(e.type for e in self.events).items())),
            "positive_events": sum(1 for e in self.events if e.is_positive),
            "rejected_events": dict(self.rejected_events),
            "rejected_catalog": dict(self.rejected_catalog),
            "first_ts": span[0],
            "last_ts": span[1],
        }


def load_dataset(
    events_path: str | Path,
    catalog_path: str | Path,
    settings: Settings,
    *,
    limit_users: int | None = None,
) -> Dataset:
    """Parse both files; bad lines are counted by reason, never fatal.

    ``limit_users`` keeps the first N users by time of their first event (deterministic).
    Raises ``OSError`` when a file cannot be read.
    """
    catalog: dict[str, CatalogItem] = {}
    rejected_catalog: Counter[str] = Counter()
    for _, line in read_lines(catalog_path):
        parsed = parse_catalog(None, line, max_text_chars=4 * settings.limits.max_text_chars)
        if isinstance(parsed, Rejected):
            rejected_catalog[parsed.reason] += 1
        elif isinstance(parsed, CatalogDeletion):
            catalog.pop(parsed.item_id, None)
        else:
            catalog[parsed.item_id] = parsed
    events: list[Event] = []
    rejected_events: Counter[str] = Counter()
    name = Path(events_path).name
    for line_no, line in read_lines(events_path):
        event = parse_event(
            line,
            fallback_id=f"{name}:{line_no}",
            max_text_chars=settings.limits.max_text_chars,
            max_record_bytes=settings.limits.max_record_bytes,
        )
        if isinstance(event, Rejected):
            rejected_events[event.reason] += 1
        else:
            events.append(event)
    events.sort(key=lambda e: e.ts)
    if limit_users is not None:
        keep: dict[str, None] = {}
        for event in events:
            if len(keep) >= limit_users:
                break
            keep.setdefault(event.user_id, None)
        events = [e for e in events if e.user_id in keep]
    return Dataset(list(catalog.values()), events, rejected_events, rejected_catalog)


def load_truth(path: str | Path) -> TruthTimeline:
    """Read ``interest generate``'s ``truth.jsonl`` into a :class:`TruthTimeline`.

    Each line is one taste period of a user: ``user_id``, ``from_ts``, ``to_ts`` (unix
    seconds, half-open), ``tastes`` (names) and ``weights``. Malformed lines are
    skipped and counted in the log. Raises ``OSError`` when the file cannot be read.
    """
    periods: list[TastePeriod] = []
    skipped = 0
    for _, line in read_lines(path):
        try:
            obj = orjson.loads(line)
            periods.append(
                TastePeriod(
                    user_id=str(obj["user_id"]),
                    from_ts=float(obj["from_ts"]),
                    to_ts=float(obj["to_ts"]),
                    tastes=tuple(str(t) for t in obj["tastes"]),
                    weights=tuple(float(w) for w in obj.get("weights") or ()),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            skipped += 1
    if skipped:
        log.warning("%s: %d malformed truth lines skipped", path, skipped)
    return TruthTimeline(periods)


# --------------------------------------------------------------------------- engine side


class EngineRecommender:
    """Adapts an :class:`~interest_core.engine.Engine` to the protocol's recommender."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def learn(self, events: Sequence[Event]) -> None:
        self.engine.learn(events)

    def recommend(
        self, user_ids: Sequence[str], k: int, exclude: Mapping[str, Collection[str]]
    ) -> dict[str, list[str]]:
        answers = self.engine.recommend(list(user_ids), k, exclude=exclude)
        return {user: [item.item_id for item in listed] for user, listed in answers.items()}

    def top_label(self, user_id: str) -> str | None:
        """The label of the user's heaviest captured interest, if any."""
        top = self.engine.interests(user_id, 1)
        return str(top[0][0]) if top else None


def make_encoder(settings: Settings) -> Any:
    """The encoder the settings ask for (the same factory the worker uses)."""
    from interest_core.encoder import encoder_from_settings

    return encoder_from_settings(settings.encoder)


# --------------------------------------------------------------------------- the run


def _describe_settings(settings: Settings) -> dict[str, Any]:
    """The settings sections that shape the results (no Kafka section: no secrets)."""
    return {
        name: dataclasses.asdict(getattr(settings, name))
        for name in ("encoder", "model", "index", "recommend", "batch")
    }


def taste_checkpoints(truth: TruthTimeline, count: int) -> list[float]:
    """``count`` times evenly inside the truth's span (unix seconds), ends excluded."""
    start, end = truth.span()
    return [start + (end - start) * (i + 1) / (count + 1) for i in range(count)]


def evaluate_strategy(
    strategy: str,
    dataset: Dataset,
    encoder: Any,
    settings: Settings,
    *,
    k: int,
    min_history: int,
    max_lag_events: int,
    truth: TruthTimeline | None = None,
    truth_checkpoints: int = 24,
    show_progress: bool = True,
) -> tuple[dict[str, Any], PrequentialResult]:
    """Run one strategy through the protocol: its report entry (metrics, timings, taste
    tracking) and the raw per-event result."""
    from interest_core.engine import Engine

    started = time.perf_counter()
    engine = Engine(encoder, settings, strategy=strategy)
    engine.upsert_items(dataset.items)
    setup_s = time.perf_counter() - started
    recommender = EngineRecommender(engine)
    snapshots: dict[float, dict[str, str | None]] = {}
    checkpoints = taste_checkpoints(truth, truth_checkpoints) if truth is not None else []
    truth_users = truth.users if truth is not None else []

    def probe(ts: float) -> None:
        snapshots[ts] = {user: recommender.top_label(user) for user in truth_users}

    bar = tqdm(
        total=len(dataset.events),
        desc=f"{strategy:>8}",
        unit="ev",
        file=sys.stderr,
        disable=not show_progress,
        mininterval=0.5,
    )
    started = time.perf_counter()
    with bar:
        result = prequential(
            dataset.events,
            recommender,
            catalog={item.item_id for item in dataset.items},
            k=k,
            min_history=min_history,
            max_lag_events=max_lag_events,
            checkpoints=checkpoints,
            on_checkpoint=probe,
            progress=bar.update,
        )
    run_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "metrics": result.metrics(),
        "timings": {
            "setup_s": setup_s,
            "run_s": run_s,
            "events_per_s": len(dataset.events) / run_s if run_s > 0 else None,
            "asks_per_s": result.asks / run_s if run_s > 0 else None,
        },
    }
    if truth is not None:
        out["taste"] = taste_tracking(truth, snapshots)
    return out, result


def _prewarm_texts(memo: CachedEncoder, dataset: Dataset, settings: Settings) -> int:
    """Encode every distinct event text in one batched call, as the Engine will ask for it
    (redacted, with the query prefix), so replaying never waits on one-text encoder calls.
    A text the Engine asks for differently is simply encoded then; returns the count."""
    from interest_core.redact import redact

    prefix = settings.encoder.query_prefix
    texts = list(
        dict.fromkeys(
            prefix + redact(e.text)
            for e in dataset.events
            if e.text and not isinstance(e, UserDeletion)
        )
    )
    if texts:
        memo.encode(texts)
    return len(texts)


def evaluate(
    dataset: Dataset,
    settings: Settings,
    strategies: Sequence[str],
    *,
    k: int = 10,
    min_history: int = 5,
    max_lag_events: int = 0,
    truth: TruthTimeline | None = None,
    truth_checkpoints: int = 24,
    show_progress: bool = True,
    encoder: Any | None = None,
) -> dict[str, Any]:
    """Every strategy, one after another, sharing one memoised encoder.

    Returns ``{"strategies": {name: entry}, "encoder": {...}, "results": {name:
    PrequentialResult}}``; everything but ``results`` is JSON-ready.
    """
    started = time.perf_counter()
    inner = encoder if encoder is not None else make_encoder(settings)
    # One run's texts, unbounded: the catalog is encoded once for all strategies.
    memo = CachedEncoder(inner.inner if isinstance(inner, CachedEncoder) else inner, None)
    load_model_s = time.perf_counter() - started
    started = time.perf_counter()
    prewarmed = _prewarm_texts(memo, dataset, settings)
    prewarm_s = time.perf_counter() - started
    entries: dict[str, Any] = {}
    results: dict[str, PrequentialResult] = {}
    for strategy in strategies:
        log.info("evaluating %s", strategy)
        entries[strategy], results[strategy] = evaluate_strategy(
            strategy,
            dataset,
            memo,
            settings,
            k=k,
            min_history=min_history,
            max_lag_events=max_lag_events,
            truth=truth,
            truth_checkpoints=truth_checkpoints,
            show_progress=show_progress,
        )
    return {
        "strategies": entries,
        "results": results,
        "encoder": {
            "load_s": load_model_s,
            "event_texts_prewarmed": prewarmed,
            "prewarm_s": prewarm_s,
            "calls": memo.calls,
            "texts_encoded": memo.texts_encoded,
            "encode_s": memo.encode_s,
        },
    }


# --------------------------------------------------------------------------- output


def _table(report: Mapping[str, Any], k: int) -> str:
    head = f"{'strategy':<10}{'HR@' + str(k):>9}{'NDCG@' + str(k):>9}{'MRR':>8}{'coverage':>10}{'evaluated':>11}{'run s':>9}"
    rows = [head, "-" * len(head)]
    for name, entry in report["strategies"].items():
        m, t = entry["metrics"], entry["timings"]
        rows.append(
            f"{name:<10}{m[f'hr@{k}']:>9.4f}{m[f'ndcg@{k}']:>9.4f}{m['mrr']:>8.4f}"
            f"{m['coverage']:>10.4f}{m['evaluated']:>11d}{t['run_s']:>9.1f}"
        )
    tracked = {n: e["taste"] for n, e in report["strategies"].items() if "taste" in e}
    if tracked:
        rows += [
            "",
            "captured top interest vs true tastes (share of users, around each drift point):",
            f"{'strategy':<10}{'drifts':>8}{'before ok':>11}{'after new':>11}"
            f"{'after ok':>10}{'stale':>8}{'in current (mean)':>19}",
        ]
        for name, taste in tracked.items():
            d = taste["drift"]
            series = [row["in_current"] for row in taste["over_time"] if row["users"]]
            mean = sum(series) / len(series) if series else 0.0
            rows.append(
                f"{name:<10}{d['drifts']:>8d}{d['before_in_current']:>11.3f}"
                f"{d['after_new']:>11.3f}{d['after_current']:>10.3f}{d['after_stale']:>8.3f}"
                f"{mean:>19.3f}"
            )
    return "\n".join(rows)


def _plot(path: str, results: Mapping[str, PrequentialResult], k: int, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interest_core.evaluation import ndcg_gain

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, result in results.items():
        if not result.ranks:
            continue
        series = sliding_mean([ndcg_gain(r) for r in result.ranks], window)
        when = (np.asarray(result.event_ts) * 1000.0).astype("datetime64[ms]")
        ax.plot(when, series, label=name, linewidth=1.2)
    ax.set_xlabel("event time")
    ax.set_ylabel(f"NDCG@{k}, mean of the last {window} evaluated events")
    ax.set_title("Prequential NDCG over time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest eval``."""
    parser.add_argument("--events", required=True, help="event log (JSONL)")
    parser.add_argument("--catalog", required=True, help="catalog (JSONL)")
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: all)",
    )
    parser.add_argument("--k", type=int, default=10, help="list length (items)")
    parser.add_argument(
        "--min-history", type=int, default=5, help="events a user needs before being scored"
    )
    parser.add_argument("--out", help="write the report (JSON) here")
    parser.add_argument("--plot", help="write NDCG@K over time (PNG) here")
    parser.add_argument("--limit-users", type=int, help="keep only the first N users (by time)")
    parser.add_argument("--truth", help="ground truth of a generated log (truth.jsonl)")
    parser.add_argument(
        "--truth-checkpoints",
        type=int,
        default=24,
        help="times, evenly spread, at which captured interests are compared with the truth",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=0,
        help="events of other users an ask may miss, to batch asks (default 0: exact)",
    )
    parser.add_argument(
        "--window", type=int, default=0, help="plot window (evaluated events; 0: automatic)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``interest eval``: exit status 0, or 2 on bad arguments or unreadable files."""
    strategies = [s.strip() for s in str(args.strategies).split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        print(
            f"interest eval: unknown strategies {unknown}; choose from {STRATEGIES}",
            file=sys.stderr,
        )
        return 2
    if args.k <= 0 or args.min_history < 0 or args.max_lag < 0:
        print("interest eval: --k must be > 0, --min-history and --max-lag >= 0", file=sys.stderr)
        return 2
    if args.limit_users is not None and args.limit_users <= 0:
        print("interest eval: --limit-users must be > 0", file=sys.stderr)
        return 2
    try:
        import faiss
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        # Asks are one user at a time here: a one-query scan of a catalog-sized index is
        # faster on one thread than with OpenMP's start-up (and it leaves cores to others).
        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.events, args.catalog, settings, limit_users=args.limit_users)
        truth = load_truth(args.truth) if args.truth else None
    except OSError as exc:
        print(f"interest eval: {exc}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - started
    if not dataset.items:
        print("interest eval: the catalog holds no valid item", file=sys.stderr)
        return 2
    summary = dataset.summary()
    print(
        f"{summary['events']} events of {summary['users']} users, "
        f"{summary['catalog_items']} catalog items "
        f"({sum(dataset.rejected_events.values())} events rejected) in {load_s:.1f} s",
        file=sys.stderr,
    )
    outcome = evaluate(
        dataset,
        settings,
        strategies,
        k=args.k,
        min_history=args.min_history,
        max_lag_events=args.max_lag,
        truth=truth,
        truth_checkpoints=max(1, args.truth_checkpoints),
        show_progress=not args.no_progress,
    )
    results = outcome["results"]
    report = {
        "command": command_line("eval", args),
        "config": {
            "strategies": strategies,
            "k": args.k,
            "min_history": args.min_history,
            "max_lag_events": args.max_lag,
            "limit_users": args.limit_users,
            "events_file": str(args.events),
            "catalog_file": str(args.catalog),
            "truth_file": args.truth,
            "settings": _describe_settings(settings),
        },
        "dataset": summary,
        "machine": machine_info(),
        "timings": {
            "load_s": load_s,
            "total_s": time.perf_counter() - started,
            "encoder": outcome["encoder"],
        },
        "strategies": outcome["strategies"],
        "generated_at": time.time(),
    }
    print(_table(report, args.k))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"report: {args.out}", file=sys.stderr)
    if args.plot:
        evaluated = max((r.evaluated for r in results.values()), default=0)
        window = args.window or max(20, evaluated // 50)
        _plot(args.plot, results, args.k, window)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
