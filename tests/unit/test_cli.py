"""The command line honours its common options before and after the subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.cli import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{path}", "inspect", "u1"],
        ["inspect", "u1", "--config", "{path}"],
        ["--config", "{path}", "topics", "create"],
        ["topics", "create", "--config", "{path}"],
    ],
)
def test_config_is_read_in_either_position(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A configuration with a bad value: the command refuses before touching Kafka,
    # which proves it read this file and not the default one.
    config = tmp_path / "bad.toml"
    config.write_text("[batch]\nmax_events = -5\n", encoding="utf-8")
    status = main([a.replace("{path}", str(config)) for a in argv])
    assert status == 2
    assert "batch.max_events: must be positive, got -5" in capsys.readouterr().err


def test_a_missing_config_is_an_error_in_either_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    for argv in (
        ["--config", str(missing), "inspect", "u1"],
        ["inspect", "u1", "--config", str(missing)],
    ):
        assert main(argv) == 2
        assert f"configuration file not found: {missing}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level", "config"),
    [
        (["--log-level", "debug", "inspect", "u1"], "DEBUG", None),
        (["inspect", "u1", "--log-level", "info"], "INFO", None),
        (["--log-level", "debug", "inspect", "u1", "--log-level", "error"], "ERROR", None),
        (["--config", "a.toml", "inspect", "u1"], "WARNING", "a.toml"),
        (["inspect", "u1"], "WARNING", None),
    ],
)
def test_common_options_survive_the_subcommand(
    argv: list[str], level: str, config: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEREST_LOG_LEVEL", raising=False)
    args = build_parser("inspect").parse_args(argv)
    assert args.log_level == level
    assert args.config == config


def test_an_unknown_log_level_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser("inspect").parse_args(["--log-level", "loud", "inspect", "u1"])
    assert exited.value.code == 2
    assert "unknown level 'loud'" in capsys.readouterr().err


def test_a_prefix_typo_in_the_environment_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTEREST_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    config = tmp_path / "bad.toml"
    config.write_text("[batch]\nmax_events = 0\n", encoding="utf-8")
    main(["--config", str(config), "inspect", "u1"])
    err = capsys.readouterr().err
    assert "INTEREST_KAFKA__BOOTSTRAP_SERVERS is not a setting and is ignored" in err
    assert "did you mean INTEREST__KAFKA__BOOTSTRAP_SERVERS?" in err
