"""``interest eval`` end to end on a small synthetic log, with the hashing encoder."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from consumers.cli import main
from interest_core.strategies import STRATEGIES
from producers.synthetic import generate

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "test.toml"


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, users=30, items=120, events=1200, seed=7, days=10.0)
    return out


def _eval(small_log: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    report_path = tmp_path / "report.json"
    status = main(
        [
            "eval",
            "--config",
            str(CONFIG),
            "--events",
            str(small_log / "events.jsonl"),
            "--catalog",
            str(small_log / "catalog.jsonl"),
            "--out",
            str(report_path),
            "--no-progress",
            *extra,
        ]
    )
    report = orjson.loads(report_path.read_bytes()) if report_path.exists() else {}
    return status, report


def test_eval_writes_a_complete_report(small_log: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "ndcg.png"
    status, report = _eval(
        small_log, tmp_path, "--truth", str(small_log / "truth.jsonl"), "--plot", str(plot)
    )
    assert status == 0
    assert set(report) >= {"command", "config", "dataset", "machine", "timings", "strategies"}
    command = report["command"]
    assert command.startswith("interest eval ") and f"--events {small_log}" in command
    assert f"--truth {small_log / 'truth.jsonl'}" in command
    assert report["config"]["k"] == 10 and report["config"]["min_history"] == 5
    assert report["config"]["settings"]["encoder"]["backend"] == "hashing"
    assert report["dataset"]["events"] == 1200 and report["dataset"]["catalog_items"] == 120
    assert report["machine"]["cpu_count"] >= 1
    assert list(report["strategies"]) == list(STRATEGIES)
    evaluated = set()
    for entry in report["strategies"].values():
        metrics = entry["metrics"]
        for name in ("hr@10", "ndcg@10", "mrr", "coverage"):
            assert 0.0 <= metrics[name] <= 1.0 and math.isfinite(metrics[name])
        assert metrics["ndcg@10"] <= metrics["hr@10"] and metrics["mrr"] <= metrics["hr@10"]
        assert metrics["evaluated"] > 50 and metrics["exclusion_violations"] == 0
        assert (
            metrics["evaluated"]
            + metrics["skipped_cold"]
            + metrics["skipped_repeat"]
            + (metrics["skipped_unknown_item"])
            == metrics["positives"]
        )
        evaluated.add(metrics["evaluated"])
        drift = entry["taste"]["drift"]
        assert drift["drifts"] > 0
        assert all(0.0 <= drift[k] <= 1.0 for k in ("before_in_current", "after_new"))
        assert entry["taste"]["over_time"]
    # Every strategy is scored on the same events.
    assert len(evaluated) == 1
    # Each catalog item and distinct text was encoded once for all five strategies.
    encoder = report["timings"]["encoder"]
    assert 120 <= encoder["texts_encoded"] <= 120 + report["dataset"]["events"]
    assert plot.stat().st_size > 0
    table = capsys.readouterr().out
    assert "NDCG@10" in table and "hybrid" in table


def test_eval_is_deterministic(small_log: Path, tmp_path: Path) -> None:
    args = ("--strategies", "popular,dynamic", "--limit-users", "15")
    _, first = _eval(small_log, tmp_path / "a", *args)
    _, second = _eval(small_log, tmp_path / "b", *args)
    assert first["dataset"]["users"] == 15
    for name in ("popular", "dynamic"):
        assert first["strategies"][name]["metrics"] == second["strategies"][name]["metrics"]


def test_eval_refuses_bad_arguments(small_log: Path, tmp_path: Path, capsys) -> None:
    status, _ = _eval(small_log, tmp_path, "--strategies", "popular,psychic")
    assert status == 2 and "psychic" in capsys.readouterr().err
    status, _ = _eval(small_log, tmp_path, "--k", "0")
    assert status == 2
    missing = main(["eval", "--events", str(tmp_path / "nope.jsonl"), "--catalog", "x"])
    assert missing == 2
