"""``interest bench`` end to end on its broker-free sections (index, memory): JSON shape."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumers.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "test.toml"


def test_bench_quick_index_and_memory_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    status = main(
        [
            "bench",
            "--config",
            str(CONFIG),
            "--quick",
            "--skip",
            "pipeline,encoder",
            "--index-sizes",
            "1500",
            "--memory-users",
            "150",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    report = orjson.loads(out.read_bytes())
    assert "bench" in report["command"] and "--quick" in report["command"]
    assert set(report["git"]) == {"commit", "dirty"}
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and "gpu" in machine
    assert machine["load_average_1m_at_start"] is not None
    assert report["load_average_1m_at_end"] is not None
    assert "pipeline" not in report and "encoder" not in report and "soak" not in report
    (row,) = report["index"]
    assert row["items"] == 1500 and row["exact_queries_per_s"] > 0
    hnsw = row["hnsw"]
    assert hnsw["complete"] is True and 0.0 <= hnsw["recall@10"] <= 1.0
    assert hnsw["build_s"] > 0 and hnsw["queries_per_s"] > 0
    memory = report["memory"]
    assert memory["users"] == 150 and memory["state_bytes_per_user_mean"] > 0
    assert set(report["section_seconds"]) == {"index", "memory"}


def test_hnsw_over_the_limit_is_skipped_with_a_reason(tmp_path: Path) -> None:
    from consumers.harness.bench import bench_index
    from interest_core.settings import Settings

    rows = bench_index(Settings(), sizes=(800, 1200), hnsw_max_items=1000)
    assert rows[0]["hnsw"]["complete"] is True
    assert rows[1]["hnsw"] is None and "--hnsw-1m" in rows[1]["hnsw_skipped"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--skip", "nonsense"],
        ["--streams", "audio"],
        ["--events", "0"],
        ["--skip", "pipeline", "--soak", "1"],
        ["--index-sizes", "ten"],
    ],
)
def test_bench_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--config", str(CONFIG), *argv]) == 2
    assert "interest bench:" in capsys.readouterr().err
