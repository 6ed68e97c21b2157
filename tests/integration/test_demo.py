"""``interest demo`` end to end at a tiny scale, with the hashing encoder.

The demo starts its own embedded broker and two worker processes; the test checks what
it reports against what it sent, and that it leaves nothing running.
"""

from __future__ import annotations

import io

import psutil
import pytest

from consumers.harness.demo import DemoOptions, run_demo
from interest_core.settings import Settings

pytestmark = pytest.mark.integration


def _our_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_demo_runs_end_to_end_and_leaves_nothing_running() -> None:
    before = _our_children()
    out = io.StringIO()
    settings = Settings().replace(encoder={"backend": "hashing"})
    options = DemoOptions(
        users=12,
        items=60,
        events=500,
        rate=1000.0,
        bad_fraction=0.02,
        watch=2,
        eval_strategies=("popular", "hybrid"),
        ready_timeout_s=150.0,
    )
    result = run_demo(settings, options, out=out)
    text = out.getvalue()

    invalid = result.invalid_sent
    assert invalid == 10  # round(500 * 0.02) malformed lines, sent on purpose
    assert result.events_sent == 500 + invalid
    assert result.events_consumed >= 500
    assert sum(result.dead_lettered.values()) >= invalid
    assert result.recommendations_published > 0
    assert result.recommendations_seen > 0
    assert result.watched_lines > 0 and "interests:" in text and "top:" in text
    assert result.ingest_p50_s is not None and result.ingest_p99_s is not None
    assert result.ingest_p50_s <= result.ingest_p99_s
    # exact: every recommendation read back, timed from the event that triggered it
    assert len(result.delivered_s) == result.recommendations_seen
    assert all(s > 0.0 for s in result.delivered_s)  # read after sent (no time bound)
    assert "event sent -> its recommendation read back here: p50" in text
    # where the latency goes, stage by stage, from the workers' histograms
    assert list(result.stages_s) == ["kafka", "batch_wait", "process", "publish"]
    for p50, p99 in result.stages_s.values():
        assert p50 is not None and p99 is not None and p50 <= p99
    assert "where it goes, p50 / p99: kafka" in text
    # two workers, the item aggregation and the adaptation-layer trainer
    assert len(result.metrics_urls) == 4
    assert "adaptation layer:" in text
    assert result.adapter_versions_in_use  # the workers report the version in use
    assert result.evaluation is not None
    assert set(result.evaluation["strategies"]) == {"popular", "hybrid"}
    assert "6/7 summary" in text and "events/s" in text
    # Everything the demo started (broker, workers) is gone.
    assert _our_children() <= before, psutil.Process().children(recursive=True)
