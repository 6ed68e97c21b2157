"""``interest bench`` section ``items``: the item-keyed stage, measured without a broker.

A generated log (``events`` positive events of ``users`` users over ``items`` items,
item popularity Zipf-like, each user's last ``cooccurrence_window`` items paired with
the new one, as workers do) is turned into item signals chunk by chunk and folded by the
aggregation's :class:`~interest_core.item_knowledge.KnowledgeFold`. Reported:

- signals per second of the fold (and the workers' cost of deriving them, apart);
- memory per item held (process RSS growth over the fold, divided by the items), and
  RSS sampled at each quarter of the log (neighbour lists are bounded, so growth slows
  as items fill up rather than tracking the events);
- the neighbours per item (mean, max: at most twice ``items.max_neighbours``);
- the size of ``interest.items`` after compaction: one JSON record per item (bytes of
  values and keys; Kafka's own framing not included);
- the catch-up time of a new worker: parsing every record and laying it on catalog rows
  (:class:`~interest_core.item_view.KnowledgeView`); reading the topic over the network
  comes on top and is not measured here.

:func:`bench_item_latency` measures the event → item knowledge latency through Kafka.
"""

from __future__ import annotations

import gc
import random
import time
from bisect import bisect_left
from collections import deque
from typing import Any

from consumers.harness.report import rss_bytes
from interest_core.cooccurrence import CoOccurrence
from interest_core.item_knowledge import ItemRecord, KnowledgeFold, parse_item_knowledge
from interest_core.item_signals import derive_signals
from interest_core.item_view import KnowledgeView
from interest_core.knowledge import PAIR_DECAY_PER_ITEM
from interest_core.records import Rejected
from interest_core.settings import Settings
from interest_core.trending import Trending

__all__ = ["bench_item_latency", "bench_items"]


def bench_items(
    settings: Settings,
    *,
    events: int = 1_000_000,
    items: int = 100_000,
    users: int = 50_000,
    seed: int = 0,
    chunk: int = 20_000,
) -> dict[str, Any]:
    """Fold a generated log's signals; see the module docstring for what is measured."""
    rng = random.Random(seed)
    window = settings.recommend.cooccurrence_window
    fold = KnowledgeFold(
        max_neighbours=settings.items.max_neighbours,
        trending_half_life_s=settings.recommend.trending_half_life_s,
        popularity_half_life_s=settings.model.long_term_half_life_s,
    )
    histories: dict[int, deque[str]] = {}
    item_ids = [f"i{n}" for n in range(items)]
    # Zipf-like popularity: item rank r drawn with weight 1 / (r + 10).
    cumulative: list[float] = []
    total = 0.0
    for rank in range(items):
        total += 1.0 / (rank + 10)
        cumulative.append(total)
    gc.collect()
    rss_start = rss_bytes() or 0
    derive_s = fold_s = 0.0
    signals_total = 0
    samples: list[dict[str, Any]] = []
    ts = 1_700_000_000.0
    done = 0
    quarter = max(1, events // 4)
    while done < events:
        size = min(chunk, events - done)
        started = time.perf_counter()
        batch = []
        for offset in range(done, done + size):
            user = rng.randrange(users)
            item = item_ids[min(bisect_left(cumulative, rng.random() * total), items - 1)]
            history = histories.get(user)
            if history is None:
                history = histories[user] = deque(maxlen=window)
            recent = [h for h in reversed(history) if h != item]
            ts += 0.1
            batch += derive_signals(
                item,
                list(dict.fromkeys(recent)),
                weight=1.0,
                ts=ts,
                partition=user % 8,
                offset=offset,
                decay=PAIR_DECAY_PER_ITEM,
            )
            history.append(item)
        derive_s += time.perf_counter() - started
        started = time.perf_counter()
        fold.apply_all(batch)
        fold_s += time.perf_counter() - started
        signals_total += len(batch)
        done += size
        if done % quarter < size or done == events:
            samples.append(
                {
                    "events": done,
                    "items_held": len(fold.items),
                    "rss_growth_bytes": (rss_bytes() or 0) - rss_start,
                }
            )
    del histories
    gc.collect()
    held = len(fold.items)
    rss_growth = (rss_bytes() or 0) - rss_start
    neighbours = [len(item.neighbours) for item in fold.items.values()]
    started = time.perf_counter()
    records, _ = fold.take_changed()
    values = [(r.item_id.encode(), r.to_json()) for r in records]
    encode_s = time.perf_counter() - started
    topic_bytes = sum(len(k) + len(v) for k, v in values)
    # A new worker: parse every record and lay it on its catalog's rows.
    rows = {item_id: row for row, item_id in enumerate(item_ids)}
    view = KnowledgeView(
        rows,
        CoOccurrence(max_neighbours=settings.items.max_neighbours),
        Trending(settings.recommend.trending_half_life_s),
        Trending(settings.model.long_term_half_life_s),
    )
    del fold, records
    gc.collect()
    started = time.perf_counter()
    parsed_records = 0
    for key, value in values:
        parsed = parse_item_knowledge(key, value)
        if isinstance(parsed, Rejected):
            raise RuntimeError(f"own record refused: {parsed.reason}")
        view.apply(parsed)
        parsed_records += isinstance(parsed, ItemRecord)
    catch_up_s = time.perf_counter() - started
    return {
        "events": events,
        "items": items,
        "users": users,
        "max_neighbours": settings.items.max_neighbours,
        "cooccurrence_window": window,
        "signals": signals_total,
        "signals_per_event": signals_total / events,
        "fold_s": fold_s,
        "fold_signals_per_s": signals_total / fold_s if fold_s > 0 else None,
        "fold_events_per_s": events / fold_s if fold_s > 0 else None,
        "derive_s": derive_s,
        "items_held": held,
        "rss_growth_bytes": rss_growth,
        "bytes_per_item": rss_growth / held if held else None,
        "rss_samples": samples,
        "neighbours_mean": sum(neighbours) / len(neighbours) if neighbours else 0.0,
        "neighbours_max": max(neighbours, default=0),
        "items_topic_records": len(values),
        "items_topic_bytes": topic_bytes,
        "items_topic_bytes_per_item": topic_bytes / len(values) if values else None,
        "encode_records_s": encode_s,
        "catch_up_records": parsed_records,
        "catch_up_s": catch_up_s,
        "catch_up_records_per_s": parsed_records / catch_up_s if catch_up_s > 0 else None,
    }


def bench_item_latency(
    settings: Settings,
    *,
    events: int = 3000,
    rate: float = 200.0,
    users: int = 300,
    items: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Event → item knowledge latency through Kafka: one worker and one aggregator (in
    this process, hashing encoder) on an embedded broker started here; ``events`` clicks
    of ``users`` users on ``items`` items sent at ``rate`` events/s, stamped with the
    time they are sent. Quantiles are read from the worker's
    ``interest_item_knowledge_latency_seconds`` and the aggregator's
    ``interest_item_publish_latency_seconds`` histograms (interpolated within buckets)."""
    import threading
    import uuid

    import orjson
    from prometheus_client import CollectorRegistry

    from consumers.fleet import histogram_buckets, histogram_quantile
    from consumers.item_aggregator import ItemAggregator
    from consumers.worker import Worker
    from producers.broker import EmbeddedBroker, free_port
    from producers.kafka_client import make_producer
    from producers.topics import create_topics

    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        names = ("events", "catalog", "recommendations", "deadletter", "state")
        topics: dict[str, Any] = {name: f"lat{suffix}.{name}" for name in names}
        topics |= {
            "item_signals": f"lat{suffix}.item-signals",
            "items": f"lat{suffix}.items",
            "models": f"lat{suffix}.models",
        }
        cfg = settings.replace(
            kafka={"bootstrap_servers": broker.bootstrap_servers},
            topics=topics,
            consumer={"group_id": f"lat{suffix}", "max_poll_interval_ms": 3000},
            items={"group_id": f"lat{suffix}-items"},
            encoder={"backend": "hashing"},
            metrics={"enabled": False},
        )
        create_topics(cfg)
        producer = make_producer(cfg)
        for n in range(items):
            item = {"item_id": f"i{n}", "title": f"item {n}", "category": f"c{n % 12}"}
            producer.send(cfg.topics.catalog, key=f"i{n}".encode(), value=orjson.dumps(item))
        producer.flush()
        worker_registry, items_registry = CollectorRegistry(), CollectorRegistry()
        worker = Worker(cfg, worker_id="bench-items", registry=worker_registry)
        aggregator = ItemAggregator(cfg, aggregator_id="bench-items", registry=items_registry)
        stop = threading.Event()
        threads = [
            threading.Thread(target=worker.run, args=(stop,), daemon=True),
            threading.Thread(target=aggregator.run, args=(stop,), daemon=True),
        ]
        for thread in threads:
            thread.start()

        def samples(registry: Any) -> list[tuple[str, dict[str, str], float]]:
            return [(s.name, s.labels, s.value) for f in registry.collect() for s in f.samples]

        def count() -> float:
            name = "interest_item_knowledge_latency_seconds_count"
            return worker_registry.get_sample_value(name) or 0.0

        try:
            deadline = time.monotonic() + 120
            while not (worker.ready and aggregator.ready):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready: {worker.not_ready_reasons()}")
                time.sleep(0.1)
            started = time.monotonic()
            for n in range(events):
                pause = started + n / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                user = f"u{rng.randrange(users)}"
                event = {
                    "user_id": user,
                    "ts": time.time(),
                    "type": "click",
                    "item_id": f"i{min(int(rng.paretovariate(1.2)) - 1, items - 1)}",
                }
                producer.send(cfg.topics.events, key=user.encode(), value=orjson.dumps(event))
            producer.flush()
            sent_s = time.monotonic() - started
            last, quiet_since = -1.0, time.monotonic()
            while time.monotonic() - quiet_since < 3.0 and time.monotonic() < deadline + 120:
                now = count()
                if now != last:
                    last, quiet_since = now, time.monotonic()
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            producer.close()
        worker_buckets = histogram_buckets(
            samples(worker_registry), "interest_item_knowledge_latency_seconds"
        )
        items_buckets = histogram_buckets(
            samples(items_registry), "interest_item_publish_latency_seconds"
        )
        return {
            "events": events,
            "rate_events_per_s": rate,
            "sent_s": sent_s,
            "users": users,
            "items": items,
            "encoder": "hashing",
            "flush_interval_ms": cfg.items.flush_interval_ms,
            "knowledge_records_applied": count(),
            "event_to_worker_knowledge_s": {
                f"p{int(q * 100)}": histogram_quantile(q, worker_buckets) for q in (0.5, 0.95, 0.99)
            },
            "event_to_items_published_s": {
                f"p{int(q * 100)}": histogram_quantile(q, items_buckets) for q in (0.5, 0.95, 0.99)
            },
            "histogram_bounds_s": sorted(b for b in worker_buckets if b != float("inf")),
        }
