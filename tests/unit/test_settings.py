"""Settings: bad values are caught when the settings load, named the way the user wrote them."""

from __future__ import annotations

import pytest

from interest_core.settings import (
    Settings,
    SettingsError,
    env_variable_names,
    settings_from,
    unmatched_env_variables,
)


def test_defaults_and_a_valid_override_load() -> None:
    settings = settings_from({"batch": {"max_events": 64}}, {"INTEREST__ENCODER__DEVICE": "cuda:1"})
    assert settings.batch.max_events == 64
    assert settings.encoder.device == "cuda:1"
    assert Settings() == settings_from()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ({"batch": {"max_events": -5}}, "batch.max_events: must be positive, got -5"),
        ({"encoder": {"device": "tpu"}}, "encoder.device: must be auto, cpu, cuda or cuda:N"),
        ({"encoder": {"backend": "onnx"}}, "encoder.backend: must be one of transformer, hashing"),
        ({"topics": {"events_partitions": 0}}, "topics.events_partitions: must be positive"),
        ({"metrics": {"port": 70000}}, "metrics.port: must be in 0..65535"),
        (
            {"kafka": {"compression_type": "brotli"}},
            "kafka.compression_type: must be one of none, gzip, snappy, lz4, zstd",
        ),
        ({"recommend": {"mmr_lambda": 1.5}}, "recommend.mmr_lambda"),
        (
            {"consumer": {"background_fetch_max_wait_ms": -1}},
            "consumer.background_fetch_max_wait_ms: must be 0 to 60000 milliseconds",
        ),
        (
            {"consumer": {"heartbeat_interval_ms": 9000}},
            "consumer.heartbeat_interval_ms: must be below session_timeout_ms",
        ),
    ],
)
def test_a_bad_value_in_the_file_is_named_by_its_key(toml: dict, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(toml)
    assert message in str(caught.value)


def test_a_bad_value_in_the_environment_is_named_by_its_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from({}, {"INTEREST__BATCH__MAX_EVENTS": "-5"})
    assert str(caught.value) == "INTEREST__BATCH__MAX_EVENTS: must be positive, got -5"
    with pytest.raises(SettingsError, match="INTEREST__KAFKA__REQUEST_TIMEOUT_MS: expected int"):
        settings_from({}, {"INTEREST__KAFKA__REQUEST_TIMEOUT_MS": "soon"})


def test_an_unknown_override_is_named_by_its_variable_with_a_suggestion() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from({}, {"INTEREST__KAFKA__BOOTSTRAP_SERVER": "kafka:9092"})
    assert str(caught.value) == (
        "environment variable INTEREST__KAFKA__BOOTSTRAP_SERVER is not a setting;"
        " did you mean INTEREST__KAFKA__BOOTSTRAP_SERVERS?"
    )
    with pytest.raises(SettingsError, match="did you mean 'bootstrap_servers'"):
        settings_from({"kafka": {"bootstrap_server": "kafka:9092"}})


def test_interest_variables_that_configure_nothing_are_reported() -> None:
    environ = {
        "INTEREST_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",  # one underscore: a typo
        "INTEREST_CONFIG": "configs/default.toml",  # read by the command line itself
        "INTEREST__BATCH__MAX_EVENTS": "8",  # a real override: checked by settings_from
        "PATH": "/usr/bin",
    }
    warnings = unmatched_env_variables(environ, also_known=("INTEREST_CONFIG",))
    assert warnings == [
        "environment variable INTEREST_KAFKA__BOOTSTRAP_SERVERS is not a setting and is"
        " ignored; did you mean INTEREST__KAFKA__BOOTSTRAP_SERVERS?"
    ]


def test_every_setting_has_an_environment_name() -> None:
    names = env_variable_names()
    assert "INTEREST__KAFKA__BOOTSTRAP_SERVERS" in names
    assert "INTEREST__ENCODER__DEVICE" in names
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("recommend", "cold_slots", -1),
        ("recommend", "cold_item_interactions", 0),
        ("recommend", "cold_taste", -0.5),
        ("recommend", "cold_taste", float("inf")),
        ("recommend", "cold_taste", float("nan")),
        ("adapter", "popularity_correction", 1.5),
        ("adapter", "popularity_correction", -2.0),
    ],
)
def test_cold_places_and_the_popularity_correction_are_checked(
    section: str, key: str, value: float
) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings().replace(**{section: {key: value}})
