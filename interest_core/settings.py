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
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

__all__ = [
    "BatchSettings",
    "BrokerSettings",
    "ConsumerSettings",
    "EncoderSettings",
    "IndexSettings",
    "KafkaSettings",
    "LimitsSettings",
    "MetricsSettings",
    "ModelSettings",
    "RecommendSettings",
    "Settings",
    "SettingsError",
    "StateSettings",
    "TopicSettings",
    "settings_from",
]

ENV_PREFIX = "INTEREST__"


class SettingsError(ValueError):
    """A configuration value is unknown or has the wrong type."""


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


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 9092
    startup_timeout_s: float = 20.0


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


@dataclass(frozen=True)
class BatchSettings:
    max_events: int = 2048
    max_wait_ms: int = 20
    # Flush as soon as the consumer has nothing more buffered (small batches when idle,
    # up to max_events under load); False: always wait max_wait_ms for the batch to fill.
    adaptive: bool = True


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


@dataclass(frozen=True)
class IndexSettings:
    exact_max_items: int = 200000  # above this, an approximate (HNSW) index
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 80


@dataclass(frozen=True)
class RecommendSettings:
    k: int = 10
    candidates_per_source: int = 100
    mmr_lambda: float = 0.8  # 1.0 disables diversity re-ranking
    trending_half_life_s: float = 86400.0
    cooccurrence_window: int = 20  # last items of a user paired with a new one
    fusion_learning_rate: float = 0.05


@dataclass(frozen=True)
class StateSettings:
    user_ttl_s: float = 7 * 86400.0  # wall-clock inactivity before a user is evicted from memory
    max_users: int = 1_000_000
    restore_timeout_s: float = 60.0


@dataclass(frozen=True)
class LimitsSettings:
    max_text_chars: int = 2000
    max_record_bytes: int = 65536
    # Bytes (key + value + headers) of one record a worker publishes; larger dead letters
    # are truncated, larger states and recommendations trimmed (docs/GUARANTEES.md).
    max_publish_bytes: int = 1_000_000


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9400  # 0: pick a free port
    enabled: bool = True


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
    state: StateSettings = field(default_factory=StateSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

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
            raise SettingsError(f"unknown setting {path!r}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{path}: expected a table")
            changes[key] = _apply(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(obj, **changes)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise SettingsError(f"environment override {name!r} must be INTEREST__SECTION__KEY")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def settings_from(
    toml: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from a parsed TOML mapping, then environment overrides on top.

    Raises :class:`SettingsError` naming the key for an unknown key or a wrong type.
    """
    settings = _apply(Settings(), toml or {}, "")
    return _apply(settings, _env_overrides(environ or {}), "env")
