"""A real Prometheus (Debian's ``prometheus`` package; ``.ci/run`` installs it) scrapes a
fleet of two workers on the embedded broker.

After a replay with some bad records, every PromQL expression of the Grafana dashboard
is evaluated through Prometheus's HTTP API and must return at least one series; the
counters that must move did (by the exact amounts the replay implies); every alert rule
of ``deploy/prometheus/alerts.yml`` is loaded and evaluated by Prometheus without error,
the dead-letter alert goes active and the ones that must stay quiet do. A worker killed
then shows in ``interest_worker_restarts_total``. These tests never skip: without the
binaries they fail and say how to install them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from consumers.fleet import Backoff, Fleet
from interest_core.settings import Settings
from producers.broker import free_port
from producers.synthetic import generate_dataset
from producers.topics import create_topics
from tests.deploy_checks import ROOT, dashboard_expressions
from tests.hostile import interleave
from tests.integration.survival import (
    committed_everything,
    publish_catalog,
    publish_raw,
    wait_until,
)

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Grafana's ``$__rate_interval``, for a Prometheus scraping every second during a test
#: that lasts a few minutes: the whole test fits in the window.
RATE_INTERVAL = "5m"
BAD_RECORDS = 60
# When Prometheus last scraped the worker it scraped longest ago (unix seconds, the raw
# samples' own times: a comparison inside timestamp() would give the query's time), and
# only while both workers' latest scrapes succeeded: a failed one (a busy worker can miss
# this test's 1 s scrape timeout) makes the worker's series stale at once, so a sum taken
# then leaves it out.
SCRAPED_AT = (
    "min(timestamp(up{job='interest-worker'}))"
    " and on() (count(up{job='interest-worker'} == 1) == 2)"
)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed; these tests need a real Prometheus: "
            "`bash .ci/run` installs it (or `apt-get install -y prometheus`)"
        )
    return path


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_alert_rules_pass_promtool() -> None:
    promtool = _binary("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = {rule["alert"] for rule in _alert_rules()}
    assert names == {
        "InterestConsumerLagGrowing",
        "InterestDeadLetterRate",
        "InterestPoisonRecords",
        "InterestWorkerDown",
        "InterestWorkerCrashLoop",
        "InterestIngestToPublishSlow",
    }
    assert f"SUCCESS: {len(names)} rules found" in done.stdout


def test_the_compose_prometheus_loads_the_alert_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    # promtool accepts the compose config with the rules where the mount puts them.
    config["rule_files"] = [str(ALERTS)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [_binary("promtool"), "check", "config", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class Prometheus:
    """A Prometheus server scraping ``targets`` (workers) and ``items_targets`` (the item
    aggregation, its own job as in deploy/prometheus.yml) every second, with the alert
    rules."""

    def __init__(
        self, binary: str, targets: list[str], workdir: Path, items_targets: list[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "interest-worker",
                    "static_configs": [{"targets": targets}],
                },
                {
                    "job_name": "interest-items",
                    "static_configs": [{"targets": list(items_targets)}],
                },
            ],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
            return json.loads(reply.read())

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (AssertionError on a query error)."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] in {"vector", "scalar"}, (expr, answer)
        result = answer["data"]["result"]
        return result if isinstance(result, list) else [{"metric": {}, "value": result}]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, None when it returns no series."""
        result = self.query(expr)
        return None if not result else float(result[0]["value"][1])

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def prometheus_binary() -> str:
    return _binary("prometheus")


@pytest.fixture
def fleet_of_two(kafka_settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    settings = kafka_settings.replace(encoder={"backend": "hashing"})
    create_topics(settings)
    fleet = Fleet(
        settings,
        2,
        base_metrics_port=0,
        log_dir=tmp_path / "logs",
        backoff=Backoff(initial_s=0.2, max_s=1.0),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stop_timeout_s=20.0,
    )
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def _eventually(check: Any, fleet: Fleet, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet.poll()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}; fleet: {fleet.statuses()}")


@pytest.mark.integration
def test_prometheus_scrapes_a_fleet_and_answers_every_dashboard_and_alert_expression(
    fleet_of_two: Fleet, prometheus_binary: str, tmp_path: Path
) -> None:
    fleet = fleet_of_two
    settings = fleet.settings
    targets = [url.split("//")[1].split("/")[0] for url in fleet.metrics_urls("worker")]
    items = [url.split("//")[1].split("/")[0] for url in fleet.metrics_urls("aggregate")]
    prometheus = Prometheus(prometheus_binary, targets, tmp_path / "prometheus", items)
    try:
        wait_until(prometheus.ready, 60.0, "prometheus answered /-/ready")
        data = generate_dataset(users=40, items=120, events=1200, seed=31)
        publish_catalog(settings, data.catalog)
        _eventually(
            lambda: all(s.ready for s in fleet.statuses()),
            fleet,
            180.0,
            "both workers ready",
        )

        # The replay: valid events and some records that must be dead-lettered, in two
        # halves with a scrape between (a counter series Prometheus first sees already
        # moved has no rate yet; a live stream has no such first half).
        records = [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in data.events]
        bad = [(f"bad-{i}".encode(), b"{not json " + str(i).encode()) for i in range(BAD_RECORDS)]
        mixed = interleave(records, bad, seed=32)
        half = len(mixed) // 2
        assert any(r in bad for r in mixed[half:])
        consumed = "sum(interest_events_consumed_total{job='interest-worker'})"
        for part, total in ((mixed[:half], half), (mixed[half:], len(mixed))):
            publish_raw(settings, settings.topics.events, part)
            _eventually(
                lambda: committed_everything(settings), fleet, 180.0, "committed everything"
            )
            # A batch is counted as consumed when processed and its dead letters when
            # acknowledged, just before its commit: only a scrape of every worker taken
            # after the commit has both (an earlier one can show every event consumed
            # and the last batch's dead letters not yet counted).
            committed_at = time.time()
            wait_until(
                lambda at=committed_at: (prometheus.value(SCRAPED_AT) or 0.0) > at,
                60.0,
                "prometheus scraped both workers after the commit",
            )
            fleet.poll()
            per_worker = prometheus.query(
                "sum by (instance) (interest_events_consumed_total{job='interest-worker'})"
            )
            assert prometheus.value(consumed) == total, (per_worker, fleet.statuses())

        # Prometheus has the counters at the values the replay implies.
        assert prometheus.value("count(up{job='interest-worker'} == 1)") == 2
        assert prometheus.value("sum(interest_events_deadlettered_total)") == BAD_RECORDS
        assert prometheus.value("sum(interest_events_applied_total)") == len(records)
        recommendations = prometheus.value("sum(interest_recommendations_published_total)")
        assert recommendations is not None and recommendations >= 40
        state_writes = prometheus.value("sum(interest_state_writes_total)")
        assert state_writes is not None and state_writes >= 40
        assert prometheus.value("count(interest_ready{job='interest-worker'} == 1)") == 2
        assert prometheus.value("count(interest_ready{job='interest-items'} == 1)") == 1
        assert prometheus.value("sum(interest_catalog_items)") == 2 * len(data.catalog)

        # Every expression of the dashboard returns at least one series.
        expressions = [
            e.replace("$__rate_interval", RATE_INTERVAL) for e in dashboard_expressions()
        ]
        assert expressions
        empty: list[str] = []

        # A malformed item-signals record: the aggregation refuses it (a series by reason).
        publish_raw(settings, settings.topics.item_signals, [(b"i1", b"{not json")])

        def all_answer() -> bool:
            empty[:] = [e for e in expressions if not prometheus.query(e)]
            return not empty

        try:
            wait_until(all_answer, 60.0, "every dashboard expression returned a series")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {empty}") from None
        assert not empty, empty

        # Every alert rule is loaded and evaluated without error.
        rules = _alert_rules()

        def rules_evaluated() -> bool:
            groups = prometheus.get("/api/v1/rules")["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
            return len(loaded) == len(rules) and all(
                r["health"] == "ok" and r.get("lastEvaluation", "").startswith("2") for r in loaded
            )

        wait_until(rules_evaluated, 60.0, "prometheus evaluated every alert rule")
        active: dict[str, Any] = {}
        for rule in rules:
            active[rule["alert"]] = prometheus.query(rule["expr"])
        # ~30 of the second half's 630 records dead-lettered: above the 1% threshold.
        assert active["InterestDeadLetterRate"], "the dead-letter alert stayed quiet"
        # And the alarms with nothing to say stay quiet.
        for quiet in ("InterestWorkerDown", "InterestWorkerCrashLoop", "InterestPoisonRecords"):
            assert not active[quiet], (quiet, active[quiet])

        def alert_active(name: str) -> bool:
            alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
            return any(a["labels"]["alertname"] == name for a in alerts)

        wait_until(
            lambda: alert_active("InterestDeadLetterRate"), 30.0, "the dead-letter alert pending"
        )

        # A killed worker is restarted by the fleet; the restart counter moves.
        assert prometheus.value("max(interest_worker_restarts_total)") == 0
        victim = fleet.processes()[0]
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        _eventually(
            lambda: fleet.statuses()[0].restarts == 1 and fleet.statuses()[0].state == "running",
            fleet,
            180.0,
            "the killed worker came back",
        )
        wait_until(
            lambda: prometheus.value("max(interest_worker_restarts_total)") == 1,
            60.0,
            "prometheus saw the restart",
        )
    except AssertionError:
        print(prometheus.log_tail())
        raise
    finally:
        prometheus.stop()
