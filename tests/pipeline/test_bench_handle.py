"""The broker-free step bench times every event it is asked for and publishes what a
worker would."""

from __future__ import annotations

import pytest

from consumers.harness.bench_handle import handle_rate, main


def test_times_the_events_asked_for_and_the_worker_publishes() -> None:
    result = handle_rate(400, 150)
    assert result["events"] == 400 and result["batch"] == 150
    assert result["events_per_s"] > 0 and result["events_per_cpu_s"] > 0
    assert result["records_out"] > 0  # states, recommendations, item signals


def test_refuses_empty_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        handle_rate(0, 10)
    assert main(["--events", "100", "--batches", "60"]) == 0
    assert '"batch": 60.0' in capsys.readouterr().out
