"""The trainer role: learns the adaptation layer from the event stream and publishes it.

Where its training examples come from. The trainer derives them itself: it reads
``interest.events`` in its own consumer group (``<group_id>-trainer``) and the whole
catalog, and runs the same :class:`~interest_core.engine.Engine` update the workers run
(strategy ``dynamic``: the same interest state as ``hybrid``, without the item sources).
Before each positive item event the engine hands over the user's short- and long-term
vectors, and that pair with the item acted on is one example. Because user states live
in the encoder's raw space (the layer is applied only at query time), the trainer's
replica of a user's vectors is the workers' own, whatever layer version they run; so
the workers need no extra topic, no extra bytes per event and no work on their hot path,
and the trainer can be restarted, moved or replayed from any offset on its own. The
cost: it holds one state per active user (at most ``state.max_users``: the least
recently active leave first) and encodes event texts once more.

Cadence: every ``[adapter] publish_every_s`` seconds, when at least ``min_new_examples``
new examples came in, it trains ``new examples x passes / batch_size`` optimiser steps
(at most ``max_steps_per_round``) and publishes the next version of parameter
``adapter.matrix`` on the compacted ``interest.models`` topic (interest_core.params
record, model = the encoder's name, shape ``dim x dim`` float32). At start it reads the
models topic and continues from the newest version there.

Rollback: republish an older matrix under a NEW, higher version (a record with a lower
version than the one held is refused by every consumer as stale, and compaction keeps
only the newest record per name). ``--archive DIR`` keeps every published record as
``adapter.matrix-v<version>.json``; ``interest trainer rollback FILE`` republishes one
with the next version number and ``meta.rollback_of`` set. Publishing the identity
(``interest trainer rollback --identity``) turns the layer off fleet-wide.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consumers.batching import InputRecord
from consumers.group_membership import group_poll_ms
from consumers.metrics import TrainerMetrics
from interest_core.adapter import AdapterWeights, OnlineAdapter, online_adapter
from interest_core.catalog import Catalog
from interest_core.params import ParamRecord, ParamSpec, encode_params, parse_params
from interest_core.records import (
    CatalogDeletion,
    CatalogItem,
    Event,
    Rejected,
    parse_catalog,
    parse_event,
)
from interest_core.settings import Settings

__all__ = [
    "ADAPTER_PARAM",
    "Trainer",
    "adapter_record",
    "adapter_spec",
    "configure",
    "run",
    "weights_of",
]

log = logging.getLogger(__name__)

#: The name of the adaptation layer's matrix on the models topic.
ADAPTER_PARAM = "adapter.matrix"
#: Optimiser steps in one round at most, so a burst of examples does not stall the
#: consumer past its poll interval (at ~80 ms a CPU step: about 16 s).
MAX_STEPS_PER_ROUND = 200


def adapter_spec(dim: int, model: str) -> ParamSpec:
    """What a consumer of ``adapter.matrix`` expects: ``dim x dim``, learned over ``model``."""
    return ParamSpec(ADAPTER_PARAM, shape=(dim, dim), model=model)


def adapter_record(
    weights: AdapterWeights, *, created_at: float, meta: dict[str, Any] | None = None
) -> ParamRecord:
    """The models-topic record of one layer version."""
    return encode_params(
        ADAPTER_PARAM,
        weights.matrix,
        version=weights.version,
        created_at=created_at,
        model=weights.encoder,
        meta={"trained_examples": weights.trained_examples, "kind": "linear", **(meta or {})},
    )


def weights_of(record: ParamRecord) -> AdapterWeights:
    """The :class:`AdapterWeights` a parsed ``adapter.matrix`` record carries."""
    trained = record.meta.get("trained_examples", 0)
    return AdapterWeights(
        np.array(record.values, dtype=np.float32),
        record.model,
        record.version,
        int(trained) if isinstance(trained, int) and not isinstance(trained, bool) else 0,
    )


class Trainer:
    """The broker-free part of the role: catalog and events in, versions out.

    ``engine`` is the replica the examples come from (strategy ``dynamic``); ``clock``
    gives wall-clock seconds (the cadence). Not thread-safe: one thread calls it.
    """

    def __init__(
        self, settings: Settings, engine: Any, *, clock: Any = time.time, seed: int = 0
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.online: OnlineAdapter = online_adapter(
            engine.dim, engine.model_name, settings.adapter, seed=seed
        )
        engine.on_example = self.online.observe
        self.events_applied = 0
        self.events_rejected = 0
        self.published: list[ParamRecord] = []
        self._last_round = clock()

    @property
    def version(self) -> int:
        """The version last trained or resumed from (0: none yet)."""
        return self.online.version

    def resume(self, record: ParamRecord | None) -> None:
        """Continue from the newest published version (None: from the identity)."""
        if record is None:
            return
        weights = weights_of(record)
        self.online.trainer.load(weights)
        self.online.version = max(self.online.version, weights.version)

    def apply_catalog_records(self, records: Sequence[InputRecord]) -> None:
        """Catalog upserts and deletions, in order; bad records are logged and skipped."""
        upserts: dict[str, CatalogItem] = {}
        for record in records:
            parsed = parse_catalog(record.key, record.value)
            if isinstance(parsed, Rejected):
                log.warning("catalog record %s rejected: %s", record.source, parsed.reason)
            elif isinstance(parsed, CatalogDeletion):
                if upserts:
                    self.engine.upsert_items(list(upserts.values()))
                    upserts.clear()
                self.engine.delete_items([parsed.item_id])
            else:
                upserts.pop(parsed.item_id, None)
                upserts[parsed.item_id] = parsed
        if upserts:
            self.engine.upsert_items(list(upserts.values()))

    def learn_records(self, records: Sequence[InputRecord]) -> int:
        """Apply the events in ``records`` to the replica (bad ones are counted and
        skipped: the workers dead-letter them); returns the events applied."""
        limits = self.settings.limits
        events: list[Event] = []
        for record in records:
            if record.value is None:
                self.events_rejected += 1
                continue
            parsed = parse_event(
                record.value,
                fallback_id=record.source,
                offset=record.offset,
                max_text_chars=limits.max_text_chars,
                max_record_bytes=limits.max_record_bytes,
            )
            if isinstance(parsed, Rejected):
                self.events_rejected += 1
            else:  # an unknown item is skipped by the engine (the workers dead-letter it)
                events.append(parsed)
        if events:
            self.engine.learn(events)
            self.events_applied += len(events)
            # Bounded like a worker: the least recently active users beyond
            # state.max_users leave the replica (their next example starts afresh).
            self.engine.evict_least_active(self.settings.state.max_users)
        return len(events)

    def due(self) -> bool:
        """True when a round is due: the publish interval passed and enough new examples."""
        adapter = self.settings.adapter
        return (
            self.clock() - self._last_round >= adapter.publish_every_s
            and self.online.new_examples >= adapter.min_new_examples
        )

    def train_round(self) -> ParamRecord | None:
        """Train on the buffered examples; the record of the next version (not yet
        published), or None when there was nothing to learn from."""
        self._last_round = self.clock()
        catalog: Catalog = self.engine.catalog
        width = catalog.rows_allocated
        online = self.online
        weights = online.train_round(
            catalog.embeddings[:width], catalog.alive[:width], max_steps=MAX_STEPS_PER_ROUND
        )
        if weights is None:
            return None
        report = online.reports[-1]
        return adapter_record(
            weights,
            created_at=self.clock(),
            meta={
                "loss": report.last_loss,
                "steps": report.steps,
                "device": report.device,
                "precision": report.precision,
            },
        )


def rollback_record(
    source: ParamRecord | None, *, held: int, dim: int, model: str, created_at: float
) -> ParamRecord:
    """The record that rolls the fleet back: ``source``'s matrix (the identity when
    None) under version ``held + 1``, with ``meta.rollback_of`` naming the version it
    restores (0 for the identity)."""
    if source is None:
        weights = AdapterWeights.identity(dim, model)
        restored = 0
    else:
        weights = weights_of(source)
        restored = source.version
    again = AdapterWeights(weights.matrix, weights.encoder, held + 1, weights.trained_examples)
    return adapter_record(again, created_at=created_at, meta={"rollback_of": restored})


# --------------------------------------------------------------------------- the role


def _engine(settings: Settings) -> Any:
    """The replica engine (strategy dynamic) with the configured encoder and a cache."""
    from interest_core.encoder import CachedEncoder, encoder_from_settings
    from interest_core.engine import Engine

    encoder = encoder_from_settings(settings.encoder)
    if not isinstance(encoder, CachedEncoder):
        encoder = CachedEncoder(encoder, settings.encoder.cache_size)
    return Engine(encoder, settings, strategy="dynamic")


def _archive(directory: Path | None, record: ParamRecord) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{record.name}-v{record.version}.json"
        path.write_bytes(record.to_json())


def _health(
    settings: Settings, metrics: TrainerMetrics, port: int | None, caught_up: threading.Event
) -> Any:
    """The trainer's /metrics, /healthz, /readyz server (None when metrics are off)."""
    from consumers.health import HealthServer

    if not settings.metrics.enabled:
        return None
    return HealthServer(
        settings.metrics.host,
        settings.metrics.port if port is None else port,
        render_metrics=metrics.exposition,
        liveness=lambda: [],
        readiness=lambda: [] if caught_up.is_set() else ["catalog_or_models_not_caught_up"],
    ).start()


def _publish_round(
    trainer: Trainer,
    producer: Any,
    settings: Settings,
    metrics: TrainerMetrics,
    archive: Path | None,
) -> ParamRecord | None:
    """Train one round and publish the version (archived when ``archive`` is set)."""
    from consumers.params_follower import publish_params

    record = trainer.train_round()
    if record is None:
        return None
    publish_params(producer, settings.topics.models, record)
    trainer.published.append(record)
    report = trainer.online.reports[-1]
    metrics.published(
        record.name,
        record.version,
        seconds=report.seconds,
        loss=report.last_loss,
        examples=report.examples,
    )
    _archive(archive, record)
    return record


def run_trainer(
    settings: Settings,
    stop: threading.Event,
    *,
    trainer: Trainer | None = None,
    archive: Path | None = None,
    trainer_id: str | None = None,
    metrics: TrainerMetrics | None = None,
    metrics_port: int | None = None,
) -> int:
    """Consume events and the catalog, publish a version per round, until ``stop``.
    Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics_port`` (default: the
    settings' port; none when metrics are disabled)."""
    from consumers.catalog_follower import CatalogFollower
    from consumers.params_follower import ParamsFollower
    from producers.kafka_client import make_consumer, make_producer
    from producers.topics import create_topics

    trainer_id = trainer_id or f"trainer-{socket.gethostname()}-{os.getpid()}"
    trainer = trainer or Trainer(settings, _engine(settings))
    metrics = metrics or TrainerMetrics()
    caught_up = threading.Event()
    health = _health(settings, metrics, metrics_port, caught_up)
    create_topics(settings)
    client_id = f"{settings.kafka.client_id}-{trainer_id}"
    producer = make_producer(settings, client_id=client_id, max_request_size=4 << 20)
    catalog = CatalogFollower(settings, barrier=False).start()
    spec = adapter_spec(trainer.engine.dim, trainer.engine.model_name)
    models = ParamsFollower(settings, [spec], barrier=False).start()
    consumer: Any = None
    try:
        while not (catalog.caught_up and models.caught_up) and not stop.is_set():
            trainer.apply_catalog_records(catalog.poll(0.2))
            models.poll(0.0)
        trainer.resume(models.get(ADAPTER_PARAM))
        caught_up.set()
        metrics.set_ready(True)
        log.info("%s: continuing from version %d", trainer_id, trainer.version)
        consumer = make_consumer(
            settings,
            group_id=f"{settings.consumer.group_id}-trainer",
            enable_auto_commit=True,
            auto_offset_reset="earliest",
            client_id=client_id,
            background=True,  # it publishes a version every adapter cadence
        )
        consumer.subscribe([settings.topics.events])
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=group_poll_ms(consumer, 200), max_records=2000)
            now = time.time()
            records = [
                InputRecord.from_consumer_record(r, now) for rs in polled.values() for r in rs
            ]
            if applied := trainer.learn_records(records):
                metrics.events_applied(applied, trainer.online.buffer.added)
            trainer.apply_catalog_records(catalog.poll(0))
            for accepted in models.poll(0):
                # Another publisher (a rollback): continue from it, number after it.
                if accepted.name == ADAPTER_PARAM and accepted.version > trainer.version:
                    trainer.resume(accepted)
            if trainer.due() and (
                record := _publish_round(trainer, producer, settings, metrics, archive)
            ):
                log.info("%s: published %s v%d", trainer_id, record.name, record.version)
        return 0
    finally:
        if consumer is not None:
            consumer.close()
        catalog.close()
        models.close()
        producer.close(timeout=10)
        metrics.set_ready(False)
        if health is not None:
            health.stop()


def rollback(settings: Settings, source: Path | None) -> int:
    """Republish ``source`` (an archived record; None: the identity) as the newest version."""
    from consumers.params_follower import ParamsFollower, publish_params
    from interest_core.encoder import encoder_from_settings
    from producers.kafka_client import make_producer

    encoder = encoder_from_settings(settings.encoder)
    model = settings.encoder.model_name or encoder.name
    spec = adapter_spec(encoder.dim, model)
    restored: ParamRecord | None = None
    if source is not None:
        parsed = parse_params(source.read_bytes(), key=ADAPTER_PARAM, spec=spec)
        if isinstance(parsed, Rejected):
            print(f"interest trainer rollback: {source}: {parsed.reason} ({parsed.detail})")
            return 2
        restored = parsed
    models = ParamsFollower(settings, [spec], barrier=False).start()
    try:
        while not models.caught_up:
            models.poll(0.2)
        held = models.get(ADAPTER_PARAM)
    finally:
        models.close()
    record = rollback_record(
        restored,
        held=0 if held is None else held.version,
        dim=encoder.dim,
        model=model,
        created_at=time.time(),
    )
    producer = make_producer(settings, max_request_size=4 << 20)
    try:
        publish_params(producer, settings.topics.models, record)
    finally:
        producer.close(timeout=10)
    print(
        orjson.dumps(
            {"published": record.name, "version": record.version, "meta": dict(record.meta)}
        ).decode()
    )
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``interest trainer``."""
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "rollback"),
        default="run",
        help="run the trainer (default), or republish an archived version as the newest",
    )
    parser.add_argument(
        "file", nargs="?", help="rollback: an archived record (adapter.matrix-vN.json)"
    )
    parser.add_argument(
        "--identity", action="store_true", help="rollback: publish the identity (layer off)"
    )
    parser.add_argument("--archive", help="run: keep every published record in this directory")
    parser.add_argument("--trainer-id", help="client id suffix (default: host and pid)")
    parser.add_argument(
        "--metrics-port", type=int, help="serve /metrics here (default: metrics.port)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``interest trainer``: exit status 0, 2 on bad arguments."""
    if args.action == "rollback":
        if bool(args.file) == bool(args.identity):
            print("interest trainer rollback: give FILE or --identity", file=sys.stderr)
            return 2
        return rollback(settings, None if args.identity else Path(args.file))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    archive = Path(args.archive) if args.archive else None
    return run_trainer(
        settings,
        stop,
        archive=archive,
        trainer_id=args.trainer_id,
        metrics_port=args.metrics_port,
    )
