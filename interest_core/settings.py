"""One frozen settings object per process.

Built at the entry point from a TOML file (``configs/*.toml``) and environment overrides,
then passed down through constructors. This module does no I/O itself: the caller
hands it the parsed TOML mapping and the environment mapping.

Environment overrides are ``INTEREST__<SECTION>__<KEY>=value`` (double underscores),
e.g. ``INTEREST__KAFKA__BOOTSTRAP_SERVERS=kafka:9092``; values are parsed as TOML
scalars when they parse (numbers, booleans), else taken as strings.

Every setting, its default and its unit is documented in ``configs/default.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

__all__ = [
    "COMPRESSION_TYPES",
    "AdapterSettings",
    "BatchSettings",
    "BrokerSettings",
    "ConsumerSettings",
    "EncoderSettings",
    "IndexSettings",
    "ItemsSettings",
    "KafkaSettings",
    "LimitsSettings",
    "MetricsSettings",
    "ModelSettings",
    "RecommendSettings",
    "RuntimeSettings",
    "Settings",
    "SettingsError",
    "StateSettings",
    "TopicSettings",
    "env_variable_names",
    "settings_from",
    "unmatched_env_variables",
]

ENV_PREFIX = "INTEREST__"

#: The producers' codecs (``kafka.compression_type``); kafka-python decodes each with
#: the packages pyproject lists (lz4, zstandard, cramjam for snappy).
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


class SettingsError(ValueError):
    """A configuration value is unknown, has the wrong type or is out of range."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"{key}: {message}")


def _check_positive(obj: Any, *keys: str) -> None:
    for key in keys:
        _check(getattr(obj, key) > 0, key, f"must be positive, got {getattr(obj, key)!r}")


def _check_one_of(obj: Any, key: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, key)
    _check(value in allowed, key, f"must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "interest-stream"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str = ""  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_plain_username: str = ""
    sasl_plain_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    request_timeout_ms: int = 30000
    retry_backoff_ms: int = 200
    reconnect_backoff_max_ms: int = 5000
    bootstrap_timeout_ms: int = 10000  # first connection; past it, "cannot reach Kafka"
    compression_type: str = "lz4"  # the producers' codec: none, gzip, snappy, lz4, zstd

    def __post_init__(self) -> None:
        _check(bool(self.bootstrap_servers.strip()), "bootstrap_servers", "must not be empty")
        _check_one_of(self, "security_protocol", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
        _check_one_of(self, "sasl_mechanism", ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
        _check_one_of(self, "compression_type", COMPRESSION_TYPES)
        _check_positive(
            self,
            "request_timeout_ms",
            "retry_backoff_ms",
            "reconnect_backoff_max_ms",
            "bootstrap_timeout_ms",
        )


@dataclass(frozen=True)
class TopicSettings:
    events: str = "interest.events"
    catalog: str = "interest.catalog"
    recommendations: str = "interest.recommendations"
    deadletter: str = "interest.deadletter"
    state: str = "interest.state"
    item_signals: str = "interest.item-signals"
    items: str = "interest.items"
    models: str = "interest.models"
    events_partitions: int = 8
    catalog_partitions: int = 1
    recommendations_partitions: int = 8
    deadletter_partitions: int = 1
    state_partitions: int = 8
    item_signals_partitions: int = 8
    items_partitions: int = 8
    models_partitions: int = 1
    replication_factor: int = 1

    def __post_init__(self) -> None:
        for key in ("events", "catalog", "recommendations", "deadletter", "state"):
            _check(bool(getattr(self, key).strip()), key, "a topic name must not be empty")
        _check_positive(
            self,
            "events_partitions",
            "catalog_partitions",
            "recommendations_partitions",
            "deadletter_partitions",
            "state_partitions",
            "replication_factor",
        )


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 9092
    startup_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "port", f"must be in 1..65535, got {self.port}")
        _check_positive(self, "startup_timeout_s")


@dataclass(frozen=True)
class ConsumerSettings:
    group_id: str = "interest-workers"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    # kafka-python takes the rebalance timeout from this; the embedded broker completes
    # a join only after it, so dev/test keep it a few seconds.
    max_poll_interval_ms: int = 5000
    fetch_max_bytes: int = 52428800
    max_partition_fetch_bytes: int = 1048576
    # Longest a fetch waits on the broker for data (ms). kafka-python's 500 is a bare
    # hop's latency on the embedded broker (p50 126 / p99 250 ms; 10 ms: 2.9 / 5.8 ms).
    fetch_max_wait_ms: int = 10
    # The same for the readers whose freshness is counted in seconds (followers of the
    # catalog, items and models topics, the item aggregation, the trainer): each empty
    # fetch costs the broker and the reader's process CPU (an idle fleet of one worker
    # spent 0.68 of a core at 10 ms everywhere, docs/RESULTS.md round 9).
    background_fetch_max_wait_ms: int = 250
    # A child process polls the worker's events all the time and hands them over a pipe
    # (consumers/read_ahead.py): records as fresh as the broker gives them, and
    # kafka-python's decoding off the worker's thread. False: the worker's group
    # consumer polls them itself, between batches.
    read_ahead: bool = True
    # While the worker is busy with a batch, the reader's polls start at least this far
    # apart (each is a fetch the broker answers; records read sooner only wait in the
    # pipe); a worker that waits for records, or a backlog, is read at once.
    read_ahead_pace_ms: int = 25

    def __post_init__(self) -> None:
        _check(bool(self.group_id.strip()), "group_id", "must not be empty")
        _check_positive(
            self,
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "max_poll_interval_ms",
            "fetch_max_bytes",
            "max_partition_fetch_bytes",
        )
        for name in ("fetch_max_wait_ms", "background_fetch_max_wait_ms", "read_ahead_pace_ms"):
            _check(0 <= getattr(self, name) <= 60_000, name, "must be 0 to 60000 milliseconds")
        _check(
            self.heartbeat_interval_ms < self.session_timeout_ms,
            "heartbeat_interval_ms",
            f"must be below session_timeout_ms ({self.session_timeout_ms})",
        )


@dataclass(frozen=True)
class BatchSettings:
    max_events: int = 2048
    max_wait_ms: int = 20
    # Flush as soon as the consumer has nothing more buffered (small batches when idle,
    # up to max_events under load); False: always wait max_wait_ms for the batch to fill.
    adaptive: bool = True
    # Adaptive only: before a batch is declared drained, wait up to this long once for a
    # fetch sent after the previous batch (the consumer's buffer holds records fetched
    # before that batch was processed; the ones that arrived meanwhile come in the next
    # fetch). 0: take the buffer alone (the default: waiting improved the median and
    # worsened the tail, docs/RESULTS.md).
    fresh_wait_ms: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "max_events")
        _check(self.max_wait_ms >= 0, "max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        _check(self.fresh_wait_ms >= 0, "fresh_wait_ms", f"must be >= 0, got {self.fresh_wait_ms}")


@dataclass(frozen=True)
class EncoderSettings:
    backend: str = "transformer"  # transformer | hashing (cheap deterministic, for tests)
    model_path: str = ""  # empty: the bundled all-MiniLM-L6-v2
    model_name: str = ""  # name reported in records; empty: the model directory's name
    pooling: str = "auto"  # auto, mean, cls, last
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16
    max_seq_length: int = 256  # tokens
    max_tokens_per_batch: int = 16384  # padded tokens per forward pass
    cache_size: int = 200000  # distinct texts kept
    query_prefix: str = ""  # prepended to user text (e5/bge style models want one)
    document_prefix: str = ""  # prepended to item text

    def __post_init__(self) -> None:
        _check_one_of(self, "backend", ("transformer", "hashing"))
        _check_one_of(self, "pooling", ("auto", "mean", "cls", "last"))
        _check(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            "device",
            f"must be auto, cpu, cuda or cuda:N; got {self.device!r}",
        )
        _check_one_of(self, "dtype", ("auto", "float32", "float16", "bfloat16"))
        _check_positive(self, "max_seq_length", "max_tokens_per_batch")
        _check(self.cache_size >= 0, "cache_size", f"must be >= 0, got {self.cache_size}")


@dataclass(frozen=True)
class ModelSettings:
    """Hyper-parameters of the user-interest model (see interest_core.interest)."""

    short_term_half_life_s: float = 3600.0
    long_term_half_life_s: float = 30 * 86400.0
    max_slots: int = 4
    slot_similarity: float = 0.55  # cosine above which an event joins an existing slot
    slot_half_life_s: float = 14 * 86400.0
    recent_items: int = 50  # items kept in the per-user history
    negative_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "short_term_half_life_s",
            "long_term_half_life_s",
            "max_slots",
            "slot_half_life_s",
            "recent_items",
        )
        _check(
            -1.0 <= self.slot_similarity <= 1.0,
            "slot_similarity",
            f"is a cosine, in [-1, 1]; got {self.slot_similarity}",
        )
        _check(self.negative_weight >= 0, "negative_weight", "must be >= 0")


@dataclass(frozen=True)
class IndexSettings:
    exact_max_items: int = 200000  # above this, an approximate (HNSW) index
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 80

    def __post_init__(self) -> None:
        _check(self.exact_max_items >= 0, "exact_max_items", "must be >= 0")
        _check_positive(self, "hnsw_m", "hnsw_ef_search", "hnsw_ef_construction")


@dataclass(frozen=True)
class RecommendSettings:
    k: int = 10
    candidates_per_source: int = 100
    mmr_lambda: float = 0.8  # 1.0 disables diversity re-ranking
    trending_half_life_s: float = 86400.0
    cooccurrence_window: int = 20  # last items of a user paired with a new one
    fusion_learning_rate: float = 0.2
    cold_slots: int = 2  # places of a hybrid list kept for new items' best content matches
    cold_item_interactions: int = 5  # an item is new below this many positive events
    cold_taste: float = 0.7  # > 0: a user's new-item places follow their share of new items

    def __post_init__(self) -> None:
        _check_positive(self, "k", "candidates_per_source", "trending_half_life_s")
        _check(0.0 <= self.mmr_lambda <= 1.0, "mmr_lambda", f"in [0, 1]; got {self.mmr_lambda}")
        _check(self.cooccurrence_window >= 0, "cooccurrence_window", "must be >= 0")
        _check(self.fusion_learning_rate >= 0, "fusion_learning_rate", "must be >= 0")
        _check(self.cold_slots >= 0, "cold_slots", f"must be >= 0, got {self.cold_slots}")
        _check_positive(self, "cold_item_interactions")
        _check(
            math.isfinite(self.cold_taste) and self.cold_taste >= 0,
            "cold_taste",
            f"must be a finite number >= 0, got {self.cold_taste}",
        )


@dataclass(frozen=True)
class AdapterSettings:
    """The adaptation layer over the encoder (see interest_core.adapter)."""

    enabled: bool = True  # workers follow published versions; `interest eval` trains inline
    temperature: float = 0.05  # InfoNCE temperature (cosine units)
    learning_rate: float = 0.003  # Adam (chosen on the first half of MovieLens small)
    batch_size: int = 256  # examples per optimiser step
    negatives: int = 1024  # catalog items sampled per step (the batch's positives add to them)
    identity_decay: float = 0.001  # weight of ||W - I||^2
    popularity_correction: float = 0.0  # -1..1: share of the logQ correction (adapter.py)
    passes: float = 4.0  # steps per round = new examples x passes / batch_size
    buffer_examples: int = 50000  # most recent training examples kept
    train_every_events: int = 2000  # `interest eval`: events between training rounds
    publish_every_s: float = 60.0  # trainer: seconds between published versions
    min_new_examples: int = 256  # trainer: examples needed before a new version is trained
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:1...
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16
    cpu_threads: int = 1  # torch threads while training on the CPU (0: leave torch's)

    def __post_init__(self) -> None:
        _check(
            -1.0 <= self.popularity_correction <= 1.0,
            "popularity_correction",
            f"must be within [-1, 1], got {self.popularity_correction!r}",
        )


@dataclass(frozen=True)
class ItemsSettings:
    """The item-keyed stage: signals from the workers, the aggregation, the knowledge."""

    shared: bool = True  # workers publish item signals and rank from interest.items
    group_id: str = "interest-items"  # consumer group of the item aggregation
    max_neighbours: int = 200  # neighbours kept per item (up to twice as many between prunes)
    flush_interval_ms: int = 500  # milliseconds between publications of changed items
    max_pending_items: int = 20000  # changed items that force an earlier publication
    metrics_port: int = 9500  # the aggregation's /metrics port (0: pick a free one)


@dataclass(frozen=True)
class StateSettings:
    user_ttl_s: float = 7 * 86400.0  # wall-clock inactivity before a user is evicted from memory
    max_users: int = 1_000_000
    restore_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _check_positive(self, "user_ttl_s", "max_users", "restore_timeout_s")


@dataclass(frozen=True)
class LimitsSettings:
    max_text_chars: int = 2000
    max_record_bytes: int = 65536
    # Bytes (key + value + headers) of one record a worker publishes; larger dead letters
    # are truncated, larger states and recommendations trimmed (docs/GUARANTEES.md).
    max_publish_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        _check_positive(self, "max_text_chars", "max_record_bytes")


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9400  # 0: pick a free port
    enabled: bool = True

    def __post_init__(self) -> None:
        _check(0 <= self.port < 65536, "port", f"must be in 0..65535, got {self.port}")


@dataclass(frozen=True)
class RuntimeSettings:
    """The interpreter of a worker or aggregator process (``consumers.runtime``)."""

    # Seconds a thread may hold the interpreter lock while another waits for it (CPython's
    # default is 5 ms: each Kafka client call that hands the lock to a client thread
    # could wait that long to get it back).
    switch_interval_ms: float = 0.5
    # Objects that survived a full garbage collection are not scanned again until the
    # next complete pass, every full_gc_every_s (0: CPython's default collector).
    full_gc_every_s: float = 600.0
    # The worker's Kafka producer in a child process of its own (consumers.publisher):
    # its per-record work and network thread off the worker's interpreter lock.
    publisher_process: bool = True
    # torch's intra-op threads in a process whose encoder runs on torch on the CPU (0:
    # torch's default, one per core). Processes that each take every core slow each
    # other several-fold (two workers on 2 cores: 147 ms per small encode instead of
    # 20 ms, docs/RESULTS.md); `interest fleet` gives each worker cores / workers.
    torch_threads: int = 0
    # The engine's co-occurrence updates applied by a thread of their own, in chunks,
    # while the batch goes on (the compiled update releases the interpreter lock; every
    # read of the table waits for them: the same results either way).
    cooccurrence_thread: bool = True

    def __post_init__(self) -> None:
        _check(self.torch_threads >= 0, "torch_threads", f"must be >= 0, got {self.torch_threads}")
        _check(
            0.0 < self.switch_interval_ms <= 100.0,
            "switch_interval_ms",
            f"must be in (0, 100], got {self.switch_interval_ms}",
        )
        _check(
            self.full_gc_every_s >= 0.0,
            "full_gc_every_s",
            f"must be >= 0, got {self.full_gc_every_s}",
        )


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    state: StateSettings = field(default_factory=StateSettings)
    items: ItemsSettings = field(default_factory=ItemsSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def replace(self, **sections: Any) -> Settings:
        """A copy with some keys replaced: ``replace(kafka={"bootstrap_servers": ...})``."""
        return _apply(self, {name: dict(values) for name, values in sections.items()}, "")


def _coerce(value: Any, target: type, where: str) -> Any:
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif target is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise SettingsError(f"{where}: expected {target.__name__}, got {value!r}")


def _apply(obj: Any, overrides: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise SettingsError(f"unknown setting {path!r}{_did_you_mean(key, known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{path}: expected a table")
            changes[key] = _apply(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    try:
        return dataclasses.replace(obj, **changes)
    except SettingsError as exc:  # a section's range check names the key only
        raise SettingsError(f"{where}.{exc}" if where else str(exc)) from None


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def env_variable_names() -> list[str]:
    """Every ``INTEREST__SECTION__KEY`` name that overrides a setting."""
    return [
        f"{ENV_PREFIX}{section.upper()}__{key.name.upper()}"
        for section, section_type in get_type_hints(Settings).items()
        for key in fields(section_type)
    ]


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def unmatched_env_variables(
    environ: Mapping[str, str], also_known: tuple[str, ...] = ()
) -> list[str]:
    """Warnings for ``INTEREST_*`` variables that configure nothing (prefix typos).

    ``INTEREST__*`` overrides are checked strictly by :func:`settings_from`; this looks
    at the rest, e.g. ``INTEREST_KAFKA__BOOTSTRAP_SERVERS`` (one underscore), which would
    otherwise be ignored without a word. ``also_known`` names the variables the caller
    reads itself (``INTEREST_CONFIG``...). One message per variable, with a suggestion.
    """
    overrides = env_variable_names()
    known = set(also_known)
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith("INTEREST_") or name in known:
            continue
        if name.startswith(ENV_PREFIX):
            continue  # an override: settings_from checks it strictly
        guess = _guess_variable(name, overrides + sorted(known))
        hint = f"; did you mean {guess}?" if guess else ""
        warnings.append(f"environment variable {name} is not a setting and is ignored{hint}")
    return warnings


def _guess_variable(name: str, candidates: list[str]) -> str | None:
    # Compare with the underscores normalised, so INTEREST_KAFKA__X finds INTEREST__KAFKA__X.
    def norm(text: str) -> str:
        return re.sub(r"_+", "_", text.upper())

    by_norm = {norm(c): c for c in candidates}
    if norm(name) in by_norm:
        return by_norm[norm(name)]
    close = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.8)
    return by_norm[close[0]] if close else None


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, str, str, Any]]:
    """``(variable, section, key, value)`` for each ``INTEREST__SECTION__KEY`` variable."""
    out = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            guess = _guess_variable(name, env_variable_names())
            hint = f"; did you mean {guess}?" if guess else ""
            raise SettingsError(f"environment variable {name} must be INTEREST__SECTION__KEY{hint}")
        out.append((name, parts[0], parts[1], _env_value(raw)))
    return out


def _strip_path(message: str) -> str:
    # "batch.max_events: must be positive" -> "must be positive" (the variable names the key)
    head, sep, rest = message.partition(": ")
    return rest if sep and re.fullmatch(r"[a-z_]+\.[a-z_]+", head) else message


def settings_from(
    toml: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from a parsed TOML mapping, then environment overrides on top.

    Raises :class:`SettingsError` for an unknown key, a wrong type or a value out of
    range, naming the TOML key (``batch.max_events``) or the environment variable
    (``INTEREST__BATCH__MAX_EVENTS``), with a suggestion for a misspelt name.
    """
    settings = _apply(Settings(), toml or {}, "")
    names = env_variable_names()
    for name, section, key, value in _env_overrides(environ or {}):
        try:
            settings = _apply(settings, {section: {key: value}}, "")
        except SettingsError as exc:
            if name.upper() in names:
                raise SettingsError(f"{name}: {_strip_path(str(exc))}") from None
            guess = _guess_variable(name, names)
            hint = f"; did you mean {guess}?" if guess else ""
            raise SettingsError(f"environment variable {name} is not a setting{hint}") from None
    return settings
