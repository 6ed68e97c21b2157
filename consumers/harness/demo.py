"""``interest demo``: the whole system on one machine, no setup, bounded in time.

Starts the embedded broker on a free port, creates the topics, generates a synthetic
catalog and a drifting event log, loads the catalog, runs a fleet of two worker
processes, replays the log at a visible rate and prints the recommendations of a few
users as they change (with reasons and interest labels, and a note when a user's
tastes drift in the generated truth). Then a summary read from the workers'
``/metrics`` (events, events/s, ingest-to-publish latency percentiles, dead letters),
the metrics URLs, and a short prequential evaluation of the same log. Everything it
started is stopped when it ends, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from consumers.fleet import Fleet, format_status
from consumers.harness.report import (
    histogram_buckets,
    histogram_quantile,
    sample_total,
    scrape_samples,
)
from consumers.latency import STAGES
from interest_core.records import Recommendation, Rejected, parse_recommendation
from interest_core.settings import Settings

__all__ = ["DemoOptions", "DemoResult", "RecommendationWatcher", "configure", "run", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """The demo's scale and pacing."""

    users: int = 60
    items: int = 400
    events: int = 6000
    days: float = 20.0  # span of the generated log, days of event time
    seed: int = 7
    rate: float = 300.0  # events per second sent by the replay
    bad_fraction: float = 0.005  # malformed lines, to show the dead-letter path
    workers: int = 2
    watch: int = 3  # users whose recommendations are printed
    base_metrics_port: int | None = None  # None: free ports
    ready_timeout_s: float = 240.0  # model load + catalog + group join
    drain_timeout_s: float = 120.0
    evaluate: bool = True
    eval_strategies: tuple[str, ...] = ("popular", "dynamic", "hybrid")
    eval_users: int | None = 30  # the evaluation replays the first N users' events (bounded time)
    keep_running: bool = False
    worker_threads: int = 1  # torch threads per worker process


@dataclass
class DemoResult:
    """What the demo measured (for the summary and the tests)."""

    events_sent: int = 0
    invalid_sent: int = 0
    events_consumed: float = 0.0
    dead_lettered: dict[str, float] = field(default_factory=dict)
    recommendations_published: float = 0.0
    adapter_versions_published: float = 0.0  # by the trainer
    # adapter.matrix versions on every /metrics: in use by each worker, last published
    # by the trainer
    adapter_versions_in_use: list[float] = field(default_factory=list)
    recommendations_seen: int = 0
    watched_lines: int = 0
    processing_s: float = 0.0  # replay start -> last event consumed, wall seconds
    ingest_p50_s: float | None = None
    ingest_p99_s: float | None = None
    #: Event sent -> its recommendation read back by the demo (the subscriber), seconds,
    #: one per recommendation read whose trigger event was found: exact, not a histogram.
    delivered_s: list[float] = field(default_factory=list)
    #: Per stage of ingest -> publish (kafka, batch_wait, process, publish): p50 and p99 s.
    stages_s: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    metrics_urls: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    restarts: int = 0
    phases_s: dict[str, float] = field(default_factory=dict)  # wall seconds per demo phase

    @property
    def events_per_s(self) -> float:
        return self.events_consumed / self.processing_s if self.processing_s > 0 else 0.0


# --------------------------------------------------------------------------- live view


@dataclass
class _TastePeriod:
    from_ts: float
    to_ts: float
    tastes: list[str]


class RecommendationWatcher(threading.Thread):
    """Reads the recommendations topic and prints the watched users' changes.

    A line is printed when a watched user's top interest or top three items change (at
    most one per user per ``min_gap_s`` seconds), and a note when the event that
    triggered a record lies in a new taste period of the generated truth.
    """

    def __init__(
        self,
        settings: Settings,
        watched: dict[str, list[_TastePeriod]],
        titles: dict[str, str],
        out: IO[str],
        *,
        min_gap_s: float = 1.0,
    ) -> None:
        super().__init__(name="demo-watcher", daemon=True)
        self.settings, self.watched, self.titles, self.out = settings, watched, titles, out
        self.min_gap_s = min_gap_s
        self.stop_event = threading.Event()
        self.records = 0
        self.seen: list[tuple[str, float]] = []  # (trigger event id, unix s read) per record
        self.lines = 0
        self.rejected = 0
        self.latest: dict[str, Recommendation] = {}
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._shown_at: dict[str, float] = {}
        self._period: dict[str, int] = {}
        self.error: BaseException | None = None
        self.assigned = threading.Event()

    def run(self) -> None:
        from kafka import TopicPartition

        from producers.kafka_client import make_consumer

        try:
            consumer = make_consumer(
                self.settings, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
            )
            topic = self.settings.topics.recommendations
            partitions = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            self.assigned.set()
            try:
                while not self.stop_event.is_set():
                    for records in consumer.poll(timeout_ms=200).values():
                        for record in records:
                            self._handle(record.value)
            finally:
                consumer.close()
        except BaseException as exc:  # report, never kill the demo from a thread
            self.error = exc
            self.assigned.set()
            log.exception("the recommendation watcher stopped")

    def _handle(self, value: bytes | None) -> None:
        if value is None:
            return  # a tombstone
        rec = parse_recommendation(value)
        if isinstance(rec, Rejected):
            self.rejected += 1
            return
        self.records += 1
        self.seen.append((rec.trigger_event_id, time.time()))
        if rec.user_id not in self.watched:
            return
        self.latest[rec.user_id] = rec
        self._note_drift(rec)
        top_interest = rec.interests[0].label if rec.interests else None
        shown = (top_interest, tuple(i.item_id for i in rec.items[:3]))
        now = time.monotonic()
        if shown == self._shown.get(rec.user_id):
            return
        if now - self._shown_at.get(rec.user_id, -1e9) < self.min_gap_s:
            return
        self._shown[rec.user_id], self._shown_at[rec.user_id] = shown, now
        self.out.write(self.describe(rec) + "\n")
        self.out.flush()
        self.lines += 1

    def _note_drift(self, rec: Recommendation) -> None:
        periods = self.watched[rec.user_id]
        index = next(
            (i for i, p in enumerate(periods) if p.from_ts <= rec.event_ts < p.to_ts), None
        )
        if index is None:
            return
        before = self._period.get(rec.user_id)
        self._period[rec.user_id] = index
        if before is not None and index != before:
            self.out.write(
                f"  ~ {rec.user_id}'s tastes drift (generated truth): now "
                f"{', '.join(periods[index].tastes)}\n"
            )
            self.lines += 1

    def describe(self, rec: Recommendation) -> str:
        """Two lines: interests and intent, then the top three items with reasons."""
        interests = ", ".join(f"{i.label} {i.weight:.2f}" for i in rec.interests[:3]) or "-"
        intent = f"{rec.intent.label} {rec.intent.confidence:.2f}" if rec.intent else "-"
        items = "; ".join(
            f"{self.titles.get(i.item_id, i.item_id)} ({i.reason})"
            if i.reason
            else self.titles.get(i.item_id, i.item_id)
            for i in rec.items[:3]
        )
        return (
            f"{rec.user_id:>5} v{rec.version:<4} interests: {interests} | intent: {intent}\n"
            f"{'':>11}top: {items}"
        )

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5.0)


# --------------------------------------------------------------------------- helpers


def _demo_settings(base: Settings, bootstrap: str, options: DemoOptions) -> Settings:
    partitions = max(4, options.workers)
    return base.replace(
        kafka={"bootstrap_servers": bootstrap},
        topics={
            "events_partitions": partitions,
            "recommendations_partitions": partitions,
            "state_partitions": partitions,
        },
        consumer={
            "group_id": f"interest-demo-{uuid.uuid4().hex[:6]}",
            # The embedded broker completes a group join only after the rebalance
            # timeout, which kafka-python takes from max_poll_interval_ms.
            "max_poll_interval_ms": 3000,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        metrics={"host": "127.0.0.1", "enabled": True},
        # A demo lasts minutes: the trainer publishes a layer version every 15 s.
        adapter={"publish_every_s": 15.0, "min_new_examples": 128},
    )


def _pick_watched(truth_path: Path, events_path: Path, n: int) -> dict[str, list[_TastePeriod]]:
    """The ``n`` users with a drift and the most events, with their taste periods."""
    periods: dict[str, list[_TastePeriod]] = {}
    for line in truth_path.read_bytes().splitlines():
        row = orjson.loads(line)
        periods.setdefault(row["user_id"], []).append(
            _TastePeriod(float(row["from_ts"]), float(row["to_ts"]), list(row["tastes"]))
        )
    counts: Counter[str] = Counter()
    for line in events_path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
            counts[str(orjson.loads(line)["user_id"])] += 1
    drifting = [u for u, p in periods.items() if len(p) > 1]
    chosen = sorted(drifting, key=lambda u: (-counts[u], u))[:n]
    return {u: sorted(periods[u], key=lambda p: p.from_ts) for u in chosen}


def _titles(catalog_path: Path) -> dict[str, str]:
    titles: dict[str, str] = {}
    for line in catalog_path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
            row = orjson.loads(line)
            titles[str(row["item_id"])] = str(row["title"])
    return titles


def _scrape_fleet(fleet: Fleet) -> list[tuple[str, dict[str, str], float]]:
    samples: list[tuple[str, dict[str, str], float]] = []
    for url in fleet.metrics_urls():
        with contextlib.suppress(OSError, ValueError):
            samples.extend(scrape_samples(url, timeout_s=2.0))
    return samples


def _wait_ready(fleet: Fleet, timeout_s: float, out: IO[str]) -> bool:
    deadline = time.monotonic() + timeout_s
    last_line = 0.0
    while time.monotonic() < deadline:
        statuses = fleet.statuses()
        if all(s.ready for s in statuses):
            return True
        if any(s.restarts >= 3 for s in statuses):
            return False
        if time.monotonic() - last_line > 10.0:
            last_line = time.monotonic()
            ready = sum(1 for s in statuses if s.ready)
            out.write(f"  waiting for the workers: {ready}/{len(statuses)} ready\n")
            out.flush()
        time.sleep(0.5)
    return False


def _log_tail(log_dir: Path, worker_id: str, lines: int = 15) -> str:
    path = log_dir / f"{worker_id}.log"
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _evaluate(
    events: Path, catalog: Path, truth: Path, settings: Settings, options: DemoOptions
) -> dict[str, Any] | None:
    try:
        evaluate_module = importlib.import_module("consumers.harness.evaluate")
    except ImportError as exc:
        log.warning("evaluation not available: %s", exc)
        return None
    with contextlib.suppress(Exception):  # no "Loading weights" bar in the middle of the demo
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    dataset = evaluate_module.load_dataset(
        events, catalog, settings, limit_users=options.eval_users
    )
    truth_timeline = evaluate_module.load_truth(truth)
    report: dict[str, Any] = evaluate_module.evaluate(
        dataset,
        settings,
        list(options.eval_strategies),
        k=settings.recommend.k,
        truth=truth_timeline,
        show_progress=False,
    )
    return report


def _eval_table(report: dict[str, Any], k: int) -> str:
    head = f"  {'strategy':<10}{'HR@' + str(k):>8}{'NDCG@' + str(k):>9}{'MRR':>8}{'evaluated':>11}"
    rows = [head]
    for name, entry in report["strategies"].items():
        m = entry["metrics"]
        rows.append(
            f"  {name:<10}{m[f'hr@{k}']:>8.3f}{m[f'ndcg@{k}']:>9.3f}{m['mrr']:>8.3f}"
            f"{m['evaluated']:>11d}"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- the demo


def run_demo(settings: Settings, options: DemoOptions, out: IO[str] | None = None) -> DemoResult:
    """Run the demo end to end and return what it measured; stops everything it started.

    Raises :class:`RuntimeError` when the fleet does not become ready (the workers' log
    tails are in the message).
    """
    from producers.broker import EmbeddedBroker, free_port
    from producers.catalog import load_catalog
    from producers.replay import replay
    from producers.synthetic import generate
    from producers.topics import create_topics

    out = out or sys.stdout
    result = DemoResult()
    workdir = Path(tempfile.mkdtemp(prefix="interest-demo-"))
    broker = EmbeddedBroker("127.0.0.1", free_port(), settings.broker.startup_timeout_s)
    fleet: Fleet | None = None
    watcher: RecommendationWatcher | None = None

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    try:
        say(f"1/7 embedded broker (memory only) on {broker.bootstrap_servers}")
        phase = time.monotonic()
        broker.start()
        demo = _demo_settings(settings, broker.bootstrap_servers, options)
        create_topics(demo)
        data_dir = workdir / "data"
        summary = generate(
            data_dir,
            users=options.users,
            items=options.items,
            events=options.events,
            seed=options.seed,
            days=options.days,
            bad_fraction=options.bad_fraction,
        )
        say(f"2/7 synthetic data in {data_dir}:\n{summary.report()}")
        loaded = load_catalog(summary.catalog_path, demo, progress=False)
        say(f"3/7 catalog: {loaded.sent} items published to {demo.topics.catalog}")

        model = (
            "hashing encoder (test backend)"
            if demo.encoder.backend == "hashing"
            else "the bundled all-MiniLM-L6-v2 model"
        )
        say(
            f"4/7 starting a fleet of {options.workers} worker processes; each loads {model} "
            "and encodes the catalog, so the first start takes a little while..."
        )
        fleet = Fleet(
            demo,
            options.workers,
            base_metrics_port=options.base_metrics_port or 0,
            log_dir=workdir / "logs",
            env={
                **os.environ,
                "OMP_NUM_THREADS": str(options.worker_threads),
                "MKL_NUM_THREADS": str(options.worker_threads),
                "TOKENIZERS_PARALLELISM": "false",
            },
            stop_timeout_s=10.0,
            trainers=1 if demo.adapter.enabled else 0,
        )
        result.metrics_urls = fleet.metrics_urls()
        result.phases_s["broker, topics, data, catalog"] = time.monotonic() - phase
        phase = time.monotonic()
        fleet.start_background(interval_s=1.0)
        if not _wait_ready(fleet, options.ready_timeout_s, out):
            tails = "\n".join(
                f"--- {s.worker_id} ({s.state}, restarts {s.restarts}):\n"
                + _log_tail(workdir / "logs", s.worker_id)
                for s in fleet.statuses()
            )
            raise RuntimeError(f"the workers did not become ready:\n{tails}")
        for status in fleet.statuses():
            say("    " + format_status(status))

        watched = _pick_watched(summary.truth_path, summary.events_path, options.watch)
        watcher = RecommendationWatcher(demo, watched, _titles(summary.catalog_path), out)
        watcher.start()
        watcher.assigned.wait(10.0)
        say(
            f"5/7 replaying {summary.events} events at {options.rate:.0f}/s; "
            f"live recommendations of {', '.join(watched)}:"
        )
        result.phases_s["fleet start (model, catalog, group join)"] = time.monotonic() - phase
        started = time.monotonic()
        sent = replay(
            summary.events_path, demo, rate=options.rate, send_invalid=True, progress=False
        )
        if sent.interrupted:
            raise KeyboardInterrupt
        result.events_sent = sent.sent
        result.invalid_sent = sent.invalid_sent
        _wait_drained(fleet, sent.sent, options.drain_timeout_s, started, result)
        result.phases_s["replay and processing"] = time.monotonic() - started
        time.sleep(1.0)  # let the last recommendations reach the watcher
        watcher.stop()
        result.recommendations_seen = watcher.records
        result.watched_lines = watcher.lines
        sent_at = _sent_times(demo)
        result.delivered_s = [
            seen - sent_at[event_id] for event_id, seen in watcher.seen if event_id in sent_at
        ]

        samples = _scrape_fleet(fleet)
        result.events_consumed = sample_total(samples, "interest_events_consumed_total")
        result.recommendations_published = sample_total(
            samples, "interest_recommendations_published_total"
        )
        result.adapter_versions_published = sample_total(
            samples, "interest_trainer_versions_published_total"
        )
        result.adapter_versions_in_use = [
            value
            for name, labels, value in samples
            if name == "interest_param_version" and labels.get("name") == "adapter.matrix"
        ]
        for name, labels, value in samples:
            if name == "interest_events_deadlettered_total" and value:
                reason = labels.get("reason", "?")
                result.dead_lettered[reason] = result.dead_lettered.get(reason, 0.0) + value
        buckets = histogram_buckets(samples, "interest_ingest_to_publish_seconds")
        result.ingest_p50_s = histogram_quantile(0.5, buckets)
        result.ingest_p99_s = histogram_quantile(0.99, buckets)
        for stage in STAGES:
            of_stage = [sample for sample in samples if sample[1].get("stage") == stage]
            stage_buckets = histogram_buckets(of_stage, "interest_latency_stage_seconds")
            result.stages_s[stage] = (
                histogram_quantile(0.5, stage_buckets),
                histogram_quantile(0.99, stage_buckets),
            )
        result.restarts = sum(s.restarts for s in fleet.statuses())

        say("")
        say("6/7 summary (from the workers' /metrics)")
        for status in fleet.statuses():
            say("    " + format_status(status))
        say(
            f"    events sent {result.events_sent} ({result.invalid_sent} malformed on purpose); "
            f"consumed {result.events_consumed:.0f} in {result.processing_s:.1f} s "
            f"= {result.events_per_s:.0f} events/s (paced by the replay at {options.rate:.0f}/s)"
        )
        dead = ", ".join(f"{r} {n:.0f}" for r, n in sorted(result.dead_lettered.items()))
        say(f"    dead-lettered: {dead or 'none'}")
        say(
            f"    recommendations published {result.recommendations_published:.0f}, "
            f"read back by the demo {result.recommendations_seen}"
        )
        say(
            f"    ingest -> publish latency: p50 {_ms(result.ingest_p50_s)}, "
            f"p99 {_ms(result.ingest_p99_s)} (histogram estimate; the log's own event times "
            "are historical, so event-time latency is not meaningful here)"
        )
        if result.delivered_s:
            delivered = np.percentile(result.delivered_s, [50, 99, 100])
            say(
                "    event sent -> its recommendation read back here: p50 "
                + ", p99 ".join(_ms(float(v)) for v in delivered[:2])
                + f", max {_ms(float(delivered[2]))} (exact, over the "
                f"{len(result.delivered_s)} recommendations read; each from the event that "
                "triggered it, its user's newest in the batch)"
            )
        say(
            "    where it goes, p50 / p99: "
            + ", ".join(
                f"{stage} {_ms(p50)} / {_ms(p99)}" for stage, (p50, p99) in result.stages_s.items()
            )
            + " (interest_latency_stage_seconds; see README, reading the metrics)"
        )
        if demo.adapter.enabled:
            say(
                f"    adaptation layer: {result.adapter_versions_published:.0f} versions "
                "published by the trainer; versions on /metrics (workers in use, trainer last): "
                f"{', '.join(f'{v:.0f}' for v in result.adapter_versions_in_use) or 'none'}"
            )
        say("    metrics: " + "  ".join(result.metrics_urls))
        if options.keep_running:
            say(
                f"    broker: {broker.bootstrap_servers} (try: INTEREST__KAFKA__BOOTSTRAP_SERVERS="
                f"{broker.bootstrap_servers} interest subscribe)"
            )

        say("")
        if options.evaluate:
            say(
                "7/7 prequential evaluation of the same log ("
                + ", ".join(options.eval_strategies)
                + (f"; the first {options.eval_users} users" if options.eval_users else "")
                + "; the same model, encoded again in this process)..."
            )
            phase = time.monotonic()
            result.evaluation = _evaluate(
                summary.events_path, summary.catalog_path, summary.truth_path, demo, options
            )
            if result.evaluation is None:
                say("    skipped: the evaluation code is not available in this build")
            else:
                say(_eval_table(result.evaluation, demo.recommend.k))
            result.phases_s["evaluation"] = time.monotonic() - phase
        else:
            say("7/7 evaluation skipped (--no-eval)")
        say("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.phases_s.items()))

        if options.keep_running:
            say("\nthe fleet and the broker keep running; Ctrl-C stops them")
            stop = threading.Event()
            with contextlib.suppress(KeyboardInterrupt):
                fleet.run_forever(interval_s=2.0, stop=stop, out=out)
        return result
    finally:
        if watcher is not None and watcher.is_alive():
            watcher.stop()
        if fleet is not None:
            say("stopping the fleet and the broker...")
            fleet.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _sent_times(settings: Settings, timeout_s: float = 60.0) -> dict[str, float]:
    """Event id -> the unix time its record was sent (the producer's timestamp), for every
    valid event on the events topic, read from the start to the end (``read_to_end``: the
    embedded broker's end offsets can fall short) or until ``timeout_s`` has passed."""
    from kafka import TopicPartition

    from consumers.state_store import read_to_end
    from producers.kafka_client import make_consumer

    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    topic = settings.topics.events
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        sent: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
                for record in records:
                    with contextlib.suppress(ValueError):  # the malformed lines sent on purpose
                        event = orjson.loads(record.value or b"")
                        event_id = event.get("event_id") if isinstance(event, dict) else None
                        if isinstance(event_id, str) and record.timestamp > 0:
                            sent[event_id] = record.timestamp / 1000.0
            if all(read_to_end(consumer, tp, ends[tp]) for tp in tps):
                break
        return sent
    finally:
        consumer.close()


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _wait_drained(
    fleet: Fleet, sent: int, timeout_s: float, started: float, result: DemoResult
) -> None:
    """Wait until the workers consumed every sent record (or the timeout, seconds)."""
    deadline = time.monotonic() + timeout_s
    last_total, last_change = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        samples = _scrape_fleet(fleet)
        consumed = sample_total(samples, "interest_events_consumed_total")
        if consumed != last_total:
            last_total, last_change = consumed, time.monotonic()
            result.processing_s = last_change - started
        if consumed >= sent:
            return
        lag = sample_total(samples, "interest_consumer_lag_records")
        # Malformed records may be counted only as dead letters: settle on zero lag.
        if lag == 0 and time.monotonic() - last_change > 3.0 and consumed > 0:
            return
        time.sleep(0.25)
    log.warning("the fleet had not consumed every event after %.0f s", timeout_s)


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    parser.add_argument("--users", type=int, default=d.users, help=f"users (default {d.users})")
    parser.add_argument("--events", type=int, default=d.events, help=f"events (default {d.events})")
    parser.add_argument(
        "--items", type=int, default=d.items, help=f"catalog items (default {d.items})"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help=f"events per second replayed (default {d.rate:.0f})",
    )
    parser.add_argument(
        "--workers", type=int, default=d.workers, help="worker processes (default 2)"
    )
    parser.add_argument(
        "--watch", type=int, default=d.watch, help="users to follow live (default 3)"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed of the data")
    parser.add_argument(
        "--base-metrics-port",
        type=int,
        help="worker i serves /metrics on this port + i (default: free ports)",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the broker and the fleet up after the summary, until Ctrl-C",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1 or args.users < 1 or args.events < 1 or args.rate <= 0:
        print(
            "interest demo: --workers, --users, --events and --rate must be positive",
            file=sys.stderr,
        )
        return 2

    def on_sigterm(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    options = DemoOptions(
        users=args.users,
        items=args.items,
        events=args.events,
        rate=args.rate,
        workers=args.workers,
        watch=args.watch,
        seed=args.seed,
        base_metrics_port=args.base_metrics_port,
        evaluate=not args.no_eval,
        keep_running=args.keep_running,
    )
    try:
        result = run_demo(settings, options)
    except KeyboardInterrupt:
        print("interrupted; everything the demo started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"interest demo: {exc}", file=sys.stderr)
        return 1
    if result.events_consumed <= 0:
        print("interest demo: the workers consumed nothing", file=sys.stderr)
        return 1
    print("done: everything the demo started was stopped")
    return 0
