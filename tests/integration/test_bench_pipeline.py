"""``interest bench`` pipeline (both streams) and soak on the embedded broker: JSON shape.

The hashing encoder keeps it cheap; no number is checked against a time.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumers.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "test.toml"


@pytest.mark.integration
def test_bench_pipeline_two_streams_and_soak(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    status = main(
        [
            "bench",
            "--config",
            str(CONFIG),
            "--quick",
            "--skip",
            "encoder,index,memory",
            "--events",
            "300",
            "--latency-seconds",
            "3",
            "--text-events",
            "200",
            "--vector-cache",
            str(tmp_path / "vectors"),
            "--soak",
            "0.1",
            "--out",
            str(out),
        ]
    )
    report = orjson.loads(out.read_bytes())
    assert status == 0, report
    streams = report["pipeline"]["streams"]
    assert set(streams) == {"interaction", "text"}
    for name, stream in streams.items():
        assert "error" not in stream, (name, stream)
        assert stream["raw_events"] == stream["events"] == stream["worker_events"]
        assert stream["raw_events_per_s"] > 0 and stream["worker_events_per_s"] > 0
        passes = stream["raw_events_per_s_passes"]
        assert len(passes) == 3 and min(passes) <= stream["raw_events_per_s"] <= max(passes)
        assert stream["ratio_to_raw"] > 0
        assert stream["raw_events_per_cpu_s"] > 0
        if stream["worker_batches"] > 1:  # CPU is counted from the end of the first batch
            assert stream["ratio_to_raw_cpu"] > 0
        assert stream["catalog_prewarm"]["texts"] >= stream["catalog_items"]
        assert set(stream["stages"]) >= {"parse", "encode", "update", "search", "publish"}
        for key in ("latency", "latency_tenth"):  # half and a tenth of the worker's rate
            latency = stream[key]
            assert latency["events_sent"] > 0 and latency["recommendations_matched"] > 0
            # every event sent is published and timed through the worker's hook
            assert latency["events_published"] == latency["events_sent"]
            assert 0 < latency["events_measured"] <= latency["events_sent"]
            assert set(latency["ingest_to_publish_ms"]) == {"p50", "p95", "p99"}
            assert set(latency["stages_ms"]) == {"kafka", "batch_wait", "process", "publish"}
            # the sender's own share of "kafka": every record it sent was acknowledged
            assert set(latency["send_to_broker_ack_ms"]) == {"p50", "p95", "p99"}
            # the run's course: windows in order, covering every event measured
            windows = latency["windows"]
            assert [w["from_s"] for w in windows] == sorted(w["from_s"] for w in windows)
            assert sum(w["events"] for w in windows) == latency["events_measured"]
            # the worker's thread: CPU per record and how busy it was, each run and backlog
            _check_thread_load(latency["worker_thread"])
        if stream["worker_batches"] > 1:  # the backlog's load is counted after batch one
            _check_thread_load(stream["worker_thread"])
        # the broker alone at the half rate (and a worker doing nothing): every event sent
        # came back through it
        hop = stream["broker_hop"]
        assert hop["rate_events_per_s"] == pytest.approx(stream["latency"]["rate_events_per_s"])
        assert hop["events_sent"] > 0 and hop["events_received"] == hop["events_sent"]
        assert set(hop["kafka_ms"]) == {"p50", "p95", "p99"}
        # ... and went out again, published and acknowledged: never before it was polled
        floor = hop["ingest_to_ack_ms"]
        assert set(floor) == {"p50", "p95", "p99"}
        assert floor["p50"] >= hop["kafka_ms"]["p50"] and floor["p99"] >= hop["kafka_ms"]["p99"]
        assert sum(w["events"] for w in hop["windows"]) == hop["events_measured"] > 0
        # the worker ran in a process set as `interest worker` sets its own
        assert stream["runtime"]["switch_interval_ms"] == 0.5
        assert stream["runtime"]["full_collections"] >= stream["runtime"]["complete_passes"] >= 0
        assert stream["latency_tenth"]["rate_events_per_s"] == pytest.approx(
            stream["latency"]["rate_events_per_s"] / 5.0
        )
    # The cached catalog: item events need no model call, free text does.
    assert streams["interaction"]["model_texts_during_run"] == 0
    assert streams["interaction"]["stream"]["distinct_texts"] == 0
    assert streams["text"]["model_texts_during_run"] > 0
    assert streams["text"]["encoder_alone_events_per_s"] > 0
    assert "encoder_alone_events_per_s" not in streams["interaction"]
    soak = report["soak"]
    assert soak["rate_events_per_s"] == pytest.approx(streams["text"]["worker_events_per_s"] / 2.0)
    assert "text stream" in soak["rate_source"]
    assert soak["worker_restarts"] == 0 and soak["events_sent"] > 0
    assert soak["samples"] and {"t_s", "rss_mb", "lag", "sent"} <= set(soak["samples"][0])


def _check_thread_load(load: dict[str, float | None]) -> None:
    assert load["process_cpu_us_per_record"] is not None and load["process_cpu_us_per_record"] > 0
    busy, on_cpu = load["process_busy_share"], load["process_on_cpu_share"]
    assert busy is not None and 0 < busy <= 1.0
    # thread CPU can pass the wall clock only by the clocks' granularity
    assert on_cpu is not None and 0 < on_cpu <= 1.05


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry.name)] = command
    return found


@pytest.mark.integration
def test_a_bench_ended_by_sigterm_stops_the_broker_it_started(tmp_path: Path) -> None:
    """The embedded broker runs in a session of its own: a SIGTERM to the bench must
    still stop it (by default the bench would die at once and leave it running)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "consumers.cli", "bench", "--config", str(CONFIG)]
    command += ["--quick", "--skip", "encoder,index,memory,adapter,items"]
    command += ["--streams", "interaction", "--latency-seconds", "60"]
    command += ["--out", str(tmp_path / "bench.json")]
    bench = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE
    )
    brokers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not brokers and time.monotonic() < deadline and bench.poll() is None:
            brokers = [p for p, cmd in _children(bench.pid).items() if " broker " in cmd]
            time.sleep(0.2)
        assert brokers, "the bench never started its broker"
        time.sleep(2.0)  # the pipeline section under way
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
        assert bench.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
        for pid in brokers:
            gone = time.monotonic() + 15
            while Path(f"/proc/{pid}").exists() and time.monotonic() < gone:
                time.sleep(0.1)
            assert not Path(f"/proc/{pid}").exists(), "the broker outlived the bench"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in brokers:  # a broker left behind by a failure here is not left running
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
