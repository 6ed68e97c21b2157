"""``interest bench`` end to end on its lighter sections (index, memory, items): JSON shape."""

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
            "pipeline,encoder,items",
            "--index-sizes",
            "1500",
            "--memory-users",
            "150",
            "--adapter-items",
            "2000",
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
    adapter = report["adapter"]
    assert adapter["items"] == 2000 and adapter["weights_bytes"] == 384 * 384 * 4
    assert adapter["record_bytes"] > adapter["weights_bytes"]  # base64 in JSON
    (cpu,) = [t for t in adapter["training"] if t["device"] == "cpu"]
    assert cpu["steps"] == 5 and cpu["examples_per_s"] > 0
    assert len(adapter["pause_s"]) == 3 and adapter["project_s_median"] > 0
    assert set(report["section_seconds"]) == {"index", "memory", "adapter"}


def test_bench_items_section_reports_the_item_stage(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--config", str(CONFIG), "--skip", "pipeline,encoder,index,memory"]
    argv += ["--item-events", "3000", "--item-items", "300", "--item-users", "100"]
    argv += ["--item-latency-events", "100"]
    assert main([*argv, "--out", str(out)]) == 0
    items = orjson.loads(out.read_bytes())["items"]
    assert items["events"] == 3000 and items["signals"] >= 3000
    assert items["fold_signals_per_s"] > 0 and items["catch_up_s"] > 0
    assert 0 < items["items_held"] <= 300
    # Bounded lists: never more than twice max_neighbours between prunes.
    assert items["neighbours_max"] <= 2 * items["max_neighbours"]
    assert items["items_topic_records"] == items["catch_up_records"] == items["items_held"]
    assert items["items_topic_bytes"] > 0
    assert [s["events"] for s in items["rss_samples"]][-1] == 3000
    # Through a real broker: the knowledge came back to the worker.
    latency = items["latency"]
    assert latency["knowledge_records_applied"] > 0
    assert latency["event_to_worker_knowledge_s"]["p50"] > 0


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
