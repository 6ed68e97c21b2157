"""The worker's step with no broker: events per second of :meth:`Worker.handle`.

What a worker costs per event apart from Kafka (which ``interest bench`` measures with
the broker): the interaction stream of ``interest bench`` (MovieLens item events when
the dataset is beside the repository, else synthetic), a hashing encoder (the stream has
no text), records kept by a :class:`~consumers.testing.MemorySink`; a warm-up batch, then
the events in micro-batches of each size asked for. Run it on two checkouts back to back to
compare them::

    python -m consumers.harness.bench_handle --events 12000 --batches 50,300,2048
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import orjson

from consumers.batching import InputRecord
from consumers.harness.bench_streams import DEFAULT_MOVIELENS_DIR, interaction_stream
from consumers.testing import MemorySink
from consumers.worker import Worker
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings

__all__ = ["handle_rate", "main"]

WARMUP_EVENTS = 2000


def handle_rate(events: int, batch: int, *, movielens_dir: str | None = None) -> dict[str, float]:
    """Events per second (wall and CPU) of a fresh worker handling ``events`` events in
    micro-batches of ``batch``, after a warm-up of :data:`WARMUP_EVENTS`."""
    if events <= 0 or batch <= 0:
        raise ValueError("events and batch must be positive")
    stream = interaction_stream(
        events + WARMUP_EVENTS,
        items=2000,
        users=2000,
        movielens_dir=movielens_dir or DEFAULT_MOVIELENS_DIR,
    )
    worker = Worker(Settings(), encoder=HashingEncoder(384))
    worker.apply_catalog_records(
        [
            InputRecord("catalog", 0, i, str(item["item_id"]).encode(), orjson.dumps(item))
            for i, item in enumerate(stream.catalog)
        ]
    )
    now = time.time()
    records = [InputRecord("events", 0, i, None, line, now) for i, line in enumerate(stream.lines)]
    sink = MemorySink()
    worker.handle(records[:WARMUP_EVENTS], sink)  # compiled kernels, first users
    timed = records[WARMUP_EVENTS:]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(timed), batch):
        worker.handle(timed[start : start + batch], sink)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "events": float(len(timed)),
        "batch": float(batch),
        "events_per_s": len(timed) / wall,
        "events_per_cpu_s": len(timed) / cpu,
        "records_out": float(len(sink.records)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12000, help="events timed per size")
    parser.add_argument("--batches", default="50,300,2048", help="comma-separated batch sizes")
    parser.add_argument("--movielens", default=None, help="MovieLens directory")
    args = parser.parse_args(argv)
    for size in (int(s) for s in args.batches.split(",") if s.strip()):
        result = handle_rate(args.events, size, movielens_dir=args.movielens)
        print(json.dumps({k: round(v, 1) for k, v in result.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
