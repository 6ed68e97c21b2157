"""The soak run: one worker under a steady load for minutes, watching memory and lag.

``run_soak`` starts the embedded broker (free port, fresh topics), one worker process
(the real encoder unless the settings choose ``encoder.backend = "hashing"``), publishes
a generated catalog and replays a generated event log in a loop at a fixed rate (event
ids and times shifted each lap, so every lap is new traffic, not replays). Every
``sample_every_s`` seconds it samples the worker's resident memory (``/proc/<pid>/status``)
and the group's total consumer lag (end offsets minus committed offsets, records). The
report gives both over time and their least-squares slopes over the second half of the
run: a worker that leaks or falls behind shows a positive slope.

Not a test: a bench. ``interest bench --soak MINUTES`` runs it after the pipeline
section at half the text stream's measured worker rate (or ``--soak-rate N``, or half of
``--pipeline-rate N``) and adds this report to the bench JSON; on its own:
``python -m consumers.harness.soak --minutes 20 --rate 400``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition

from consumers.harness.report import rss_mib
from interest_core.settings import Settings

__all__ = ["configure", "lag_records", "run", "run_soak", "slope_per_min"]

log = logging.getLogger(__name__)


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, in value units per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


def lag_records(settings: Settings, consumer: Any) -> int | None:
    """Total lag of the worker group on the events topic (records); None if unknown.

    ``consumer`` is a group consumer that never subscribes (it only reads offsets).
    """
    topic = settings.topics.events
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            committed = consumer.committed(tp) or 0
            total += max(0, int(ends[tp]) - int(committed))
        return total
    except Exception as exc:  # a sample is skipped, the soak goes on
        log.warning("lag sample failed: %s", exc)
        return None


class _Feeder(threading.Thread):
    """Sends the event log in laps at ``rate`` events per second until stopped."""

    def __init__(
        self, settings: Settings, events: list[dict[str, Any]], rate: float, span_s: float
    ) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.settings, self.events, self.rate, self.span_s = settings, events, rate, span_s
        self.sent = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from producers.publish import bulk_producer

        producer = bulk_producer(self.settings)
        topic = self.settings.topics.events
        started = time.monotonic()
        lap = 0
        try:
            while not self.stop.is_set():
                shift = lap * self.span_s
                for event in self.events:
                    if self.stop.is_set():
                        break
                    due = self.sent / self.rate - (time.monotonic() - started)
                    if due > 0.002:
                        time.sleep(due)
                    record = dict(event, event_id=f"{event['event_id']}-l{lap}")
                    record["ts"] = float(event["ts"]) + shift
                    try:
                        producer.send(
                            topic, key=str(event["user_id"]).encode(), value=orjson.dumps(record)
                        )
                    except Exception as exc:
                        self.failed += 1
                        log.warning("send failed: %s", exc)
                    self.sent += 1
                lap += 1
        finally:
            producer.flush()
            producer.close()


def run_soak(
    settings: Settings,
    minutes: float,
    rate: float,
    *,
    users: int = 2000,
    items: int = 2000,
    events: int = 20_000,
    sample_every_s: float = 10.0,
    seed: int = 0,
    log_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the soak for ``minutes`` at ``rate`` events per second; returns the report.

    The report holds ``samples`` (``t_s`` seconds since the load started, ``rss_mb``,
    ``lag`` records, ``sent`` events), ``rss_slope_mb_per_min`` and
    ``lag_slope_per_min`` over the second half, and the worker's restarts (should be 0).
    Raises ``ValueError`` on a non-positive duration or rate.
    """
    if minutes <= 0 or rate <= 0:
        raise ValueError("minutes and rate must be positive")
    from consumers.fleet import Fleet
    from producers.broker import EmbeddedBroker, free_port
    from producers.kafka_client import make_consumer, make_producer
    from producers.synthetic import generate_dataset
    from producers.topics import create_topics

    data = generate_dataset(users=users, items=items, events=events, seed=seed)
    span_s = max(float(e["ts"]) for e in data.events) - min(float(e["ts"]) for e in data.events)
    suffix = uuid.uuid4().hex[:8]
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="soak-"))
    samples: list[dict[str, Any]] = []
    with EmbeddedBroker("127.0.0.1", free_port(), settings.broker.startup_timeout_s) as broker:
        t = settings.topics
        run_settings = settings.replace(
            kafka={"bootstrap_servers": broker.bootstrap_servers},
            topics={
                "events": f"soak{suffix}.events",
                "catalog": f"soak{suffix}.catalog",
                "recommendations": f"soak{suffix}.recommendations",
                "deadletter": f"soak{suffix}.deadletter",
                "state": f"soak{suffix}.state",
                "events_partitions": t.events_partitions,
            },
            consumer={"group_id": f"soak{suffix}"},
            metrics={"port": 0},
        )
        create_topics(run_settings)
        producer = make_producer(run_settings)
        for item in data.catalog:
            producer.send(
                run_settings.topics.catalog,
                key=str(item["item_id"]).encode(),
                value=orjson.dumps(item),
            )
        producer.flush()
        producer.close()
        fleet = Fleet(run_settings, 1, base_metrics_port=0, log_dir=logs)
        fleet.start_background(interval_s=1.0)
        offsets = make_consumer(
            run_settings, group_id=run_settings.consumer.group_id, enable_auto_commit=False
        )
        feeder = _Feeder(run_settings, data.events, rate, span_s)
        try:
            deadline = time.monotonic() + 600.0
            while not any(s.ready for s in fleet.statuses()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker never got ready; logs in {logs}")
                time.sleep(0.5)
            feeder.start()
            started = time.monotonic()
            end = started + minutes * 60.0
            next_sample = started
            while time.monotonic() < end:
                time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))
                process = fleet.processes()[0]
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": None if process is None else rss_mib(process.pid),
                    "lag": lag_records(run_settings, offsets),
                    "sent": feeder.sent,
                }
                samples.append(sample)
                log.info("soak sample %s", sample)
                next_sample += sample_every_s
        finally:
            feeder.stop.set()
            feeder.join(30.0)
            offsets.close(autocommit=False)
            restarts = sum(s.restarts for s in fleet.statuses())
            fleet.stop()
    half = minutes * 60.0 / 2
    second = [s for s in samples if s["t_s"] >= half]
    rss_points = [(s["t_s"], s["rss_mb"]) for s in second if s["rss_mb"] is not None]
    lag_points = [(s["t_s"], float(s["lag"])) for s in second if s["lag"] is not None]
    rss_values = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    lags = [s["lag"] for s in samples if s["lag"] is not None]
    return {
        "minutes": minutes,
        "rate_events_per_s": rate,
        "encoder": settings.encoder.backend,
        "events_sent": feeder.sent,
        "send_failures": feeder.failed,
        "worker_restarts": restarts,
        "rss_start_mb": rss_values[0] if rss_values else None,
        "rss_end_mb": rss_values[-1] if rss_values else None,
        "rss_slope_mb_per_min": slope_per_min(rss_points),
        "lag_max": max(lags) if lags else None,
        "lag_end": lags[-1] if lags else None,
        "lag_slope_per_min": slope_per_min(lag_points),
        "samples": samples,
        "logs": str(logs),
        "settings": {"batch": dataclasses.asdict(settings.batch)},
    }


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of the soak command."""
    parser.add_argument("--minutes", type=float, default=20.0, help="duration (default 20)")
    parser.add_argument(
        "--rate", type=float, required=True, help="events per second (half the bench throughput)"
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20_000, help="events per lap of the log")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--out", metavar="FILE", help="write the JSON report here too")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the soak and print its JSON report on stdout."""
    report = run_soak(
        settings,
        args.minutes,
        args.rate,
        users=args.users,
        events=args.events,
        sample_every_s=args.sample_every,
    )
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    print(
        f"soak: RSS {report['rss_start_mb']} -> {report['rss_end_mb']} MiB"
        f" (slope {report['rss_slope_mb_per_min']} MiB/min), lag max {report['lag_max']}"
        f" (slope {report['lag_slope_per_min']} /min), restarts {report['worker_restarts']}",
        file=sys.stderr,
    )
    return 0 if report["worker_restarts"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.harness.soak``: the same, with ``--config`` like every command."""
    from consumers.cli import load_settings

    parser = argparse.ArgumentParser(prog="python -m consumers.harness.soak", description=__doc__)
    parser.add_argument("--config", metavar="PATH")
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("kafka",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args, load_settings(args.config))


if __name__ == "__main__":
    raise SystemExit(main())
