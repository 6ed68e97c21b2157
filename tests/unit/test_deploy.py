"""The deployment files agree with each other and with the code.

No Docker engine runs here, so these read the files: docker-compose.yml, the
Dockerfiles, deploy/prometheus.yml, the Grafana provisioning and dashboard, configs/.
The dashboard's metrics are checked against the architecture's metric table here and
against a live worker's /metrics in tests/integration/test_deploy_metrics.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.cli import COMMANDS, load_settings
from tests.deploy_checks import (
    DASHBOARD,
    TORCH_CUDA_BUILDS,
    Dockerfile,
    base_metric_name,
    dashboard_expressions,
    dashboard_metric_names,
    exported_sample_names,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "interest-stream.yml"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.cuda"]
MAKEFILE = ROOT / "Makefile"


def _freeze_constraints():
    """deploy/freeze_constraints.py, the generator of deploy/constraints.txt."""
    spec = importlib.util.spec_from_file_location(
        "freeze_constraints", ROOT / "deploy" / "freeze_constraints.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROMQL_WORDS = {
    "sum",
    "rate",
    "max",
    "min",
    "avg",
    "by",
    "le",
    "histogram_quantile",
    "increase",
    "irate",
}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _docker_settings():
    return load_settings(ROOT / "configs" / "docker.toml", {})


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_config_loads(path: Path) -> None:
    settings = load_settings(path, {})
    assert settings.topics.events_partitions >= 1


def test_override_configs_only_override_documented_keys() -> None:
    """docker/gpu/test configs may only name keys that default.toml documents."""
    import tomllib

    documented = tomllib.loads((ROOT / "configs" / "default.toml").read_text(encoding="utf-8"))
    for path in (ROOT / "configs").glob("*.toml"):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for section, values in data.items():
            assert section in documented, f"{path.name}: [{section}] not in default.toml"
            for key in values:
                assert key in documented[section], f"{path.name}: {section}.{key} undocumented"
        assert "default.toml" in path.read_text(encoding="utf-8") or path.name == "default.toml"


def test_docker_config_binds_metrics_for_the_network_and_reaches_kafka() -> None:
    settings = _docker_settings()
    assert settings.metrics.host == "0.0.0.0"
    assert settings.metrics.port > 0
    kafka = _compose()["services"]["kafka"]["environment"]
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = [a.split("://", 1)[1] for a in advertised if a.startswith("INTERNAL://")]
    assert internal == [settings.kafka.bootstrap_servers]


def test_gpu_config_runs_the_encoder_on_cuda_in_half_precision() -> None:
    settings = load_settings(ROOT / "configs" / "gpu.toml", {})
    default = load_settings(ROOT / "configs" / "default.toml", {})
    assert settings.encoder.device == "cuda"
    assert settings.encoder.dtype == "float16"
    assert settings.batch.max_events > default.batch.max_events


# --------------------------------------------------------------------------- compose


def test_compose_references_exist() -> None:
    compose = _compose()
    services = compose["services"]
    volumes = set((compose.get("volumes") or {}).keys())
    assert {"kafka", "topics", "worker", "replay", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        depends = service.get("depends_on") or []
        for dep in depends if isinstance(depends, list) else depends.keys():
            assert dep in services, f"{name} depends on unknown service {dep}"
        build = service.get("build")
        if build:
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} missing"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mounted path {source} missing"
            else:
                assert source in volumes, f"{name}: named volume {source} not declared"


def test_compose_runs_only_known_interest_commands() -> None:
    for name, service in _compose()["services"].items():
        if service.get("image", "").startswith("interest-stream"):
            command = service["command"]
            words = (
                re.findall(r"\binterest (\w+)", " ".join(command))
                if service.get("entrypoint")
                else [command[0]]
            )
            assert words, name
            for word in words:
                assert word in COMMANDS, f"{name} runs unknown subcommand {word}"


def test_compose_settings_overrides_are_settings_that_load() -> None:
    """Every service's INTEREST__ overrides name real settings with valid values over the
    config it mounts (a misspelt key would stop the container at start)."""
    checked = 0
    for name, service in _compose()["services"].items():
        env = {str(k): str(v) for k, v in (service.get("environment") or {}).items()}
        overrides = {k: v for k, v in env.items() if k.startswith("INTEREST__")}
        if not overrides:
            continue
        config = env.get("INTEREST_CONFIG", "/app/configs/docker.toml").replace("/app/", "")
        settings = load_settings(ROOT / config, overrides)
        checked += 1
        if name == "worker":  # scaled on one host: one torch thread each
            assert settings.runtime.torch_threads == 1
    assert checked >= 3


def test_workers_scale() -> None:
    """No fixed container name or host port, or `--scale worker=N` would collide."""
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert str(_docker_settings().metrics.port) in [str(p) for p in worker.get("expose", [])]
    assert _docker_settings().topics.events_partitions >= 2


def test_compose_config_files_are_the_ones_mounted() -> None:
    compose = _compose()
    worker = compose["services"]["worker"]
    config = worker["environment"]["INTEREST_CONFIG"]
    mounts = dict(v.split(":")[:2][::-1] for v in worker["volumes"])
    mount_dir = next(target for target in mounts if config.startswith(target + "/"))
    assert (ROOT / mounts[mount_dir] / config[len(mount_dir) + 1 :]).is_file()


# --------------------------------------------------------------------------- Dockerfiles


def _dockerignore_allows(path: str) -> bool:
    allowed = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "**" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_and_unignored_files(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    for args in copies:
        if any(a.startswith("--from") for a in args):
            continue
        for source in args[:-1]:
            optional = source.endswith("*")
            source = source.rstrip("*")
            if optional and not (ROOT / source).exists():
                continue
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: missing"
            assert _dockerignore_allows(source), f"{dockerfile.name}: {source} is dockerignored"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime_is_offline_non_root_and_configured(dockerfile: Path) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    runtime = text.split(" AS runtime", 1)[1]
    assert "HF_HUB_OFFLINE=1" in runtime and "TRANSFORMERS_OFFLINE=1" in runtime
    assert re.search(r"^USER (?!root)\w+", runtime, re.M)
    config = re.search(r"INTEREST_CONFIG=/app/(\S+)", runtime)
    assert config and (ROOT / config.group(1)).is_file()
    assert "COPY configs /app/configs" in runtime
    assert re.search(r"ARG TORCH_SPEC=torch==\d+\.\d+\.\d+", text), "torch must be pinned"
    # The probe reads the port from the settings (tested in test_healthcheck_*), not 9400.
    assert 'CMD ["python", "-m", "consumers.healthcheck"]' in runtime
    assert not re.search(r"HEALTHCHECK.*:\d+/", runtime)
    entry = re.search(r"^ENTRYPOINT (.+)$", runtime, re.M)
    assert entry and json.loads(entry.group(1)) == ["interest"]


def test_constraints_pin_every_runtime_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "deploy" / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0]
        name = re.sub(r"[-_.]+", "-", name).lower()
        if name != "torch":  # pinned by the TORCH_SPEC build argument instead
            assert name in pinned, f"{name} is not pinned in deploy/constraints.txt"


# --------------------------------------------------------------------------- Prometheus / Grafana


def test_prometheus_scrapes_every_worker_on_the_configured_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_jobs = [j for j in jobs.values() if j.get("dns_sd_configs")]
    assert worker_jobs
    sd = worker_jobs[0]["dns_sd_configs"][0]
    assert set(sd["names"]) & {"worker", "tasks.worker"}
    assert sd["port"] == _docker_settings().metrics.port
    assert worker_jobs[0].get("metrics_path", "/metrics") == "/metrics"
    prometheus = _compose()["services"]["prometheus"]
    mounted = [v.split(":")[0] for v in prometheus["volumes"]]
    assert "./deploy/prometheus.yml" in mounted


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    providers = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    path = providers[0]["options"]["path"]
    assert (ROOT / mounts[path] / DASHBOARD.name).is_file()
    assert (ROOT / mounts["/etc/grafana/provisioning"] / "datasources").is_dir()
    datasource = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_covers_what_operators_need() -> None:
    exprs = " ".join(dashboard_expressions())
    for needed in (
        "interest_events_consumed_total",
        "interest_event_to_publish_seconds_bucket",
        "interest_consumer_lag_records",
        "interest_batch_size_bucket",
        "interest_encoder_seconds_bucket",
        "interest_embedding_cache_hits_total",
        "interest_events_deadlettered_total",
        "interest_recommendations_published_total",
    ):
        assert needed in exprs, needed
    assert "histogram_quantile" in exprs


def test_dashboard_metrics_are_in_the_architecture_metric_table() -> None:
    table = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(interest_[a-z0-9_]+)`", table))
    # "`interest_embedding_cache_hits_total` / `_misses_total`" documents both.
    documented |= {
        d.replace("hits_total", "misses_total") for d in documented if d.endswith("_hits_total")
    }
    for sample in dashboard_metric_names():
        assert base_metric_name(sample) in documented, sample


def test_dashboard_expressions_are_balanced() -> None:
    for expr in dashboard_expressions():
        assert expr.count("(") == expr.count(")"), expr
        assert expr.count("[") == expr.count("]"), expr
        words = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
        assert words <= PROMQL_WORDS, words - PROMQL_WORDS


def test_readme_commands_in_compose_header_parse() -> None:
    """The usage lines at the top of docker-compose.yml name real services and commands."""
    header = [line[1:].strip() for line in COMPOSE.read_text().splitlines() if line.startswith("#")]
    scale = [line for line in header if "--scale" in line]
    assert scale and "worker=" in scale[0]
    for line in header:
        if line.startswith("INTEREST__"):
            words = shlex.split(line.split("#")[0])
            assert words[1] == "interest" and words[2] in COMMANDS


def test_dashboard_metrics_exist_in_the_worker_metrics_registry() -> None:
    """Against consumers/metrics.py after exercising its hooks (the live /metrics check
    of a running worker is tests/integration/test_deploy_metrics.py)."""
    from consumers.metrics import AggregatorMetrics, WorkerMetrics

    metrics = WorkerMetrics()
    metrics.records_consumed(["click", "view", "invalid"])
    metrics.dead_lettered("not_json")
    metrics.batch_done(size=3, parse_s=0.001, encode_s=0.01, texts_encoded=2, cache_hits=1)
    metrics.published(
        publish_s=0.002,
        batch_s=0.02,
        recommendations=2,
        tombstones=0,
        state_writes=2,
        published_at=100.0,
        event_times=[99.0],
        ingest_times=[99.9],
    )
    metrics.lag({("interest.events", 0): 5})
    metrics.holding(users=2, catalog_items=10)
    metrics.item_record("applied")
    metrics.item_knowledge_applied([99.0], 100.0)
    metrics.item_knowledge_held(items=3, newest_ingested_at=99.0, now=100.0)
    metrics.param_in_use("fusion.weights", 2)
    metrics.set_ready(True)
    body, _ = metrics.exposition()
    exported = exported_sample_names(body.decode())
    # The item aggregation's metrics (the `aggregator` service, same dashboard).
    aggregator = AggregatorMetrics()
    aggregator.signals_folded(applied=3, duplicates=1, deleted=1)
    aggregator.signal_rejected("not_json")
    aggregator.flushed(seconds=0.01, records=2, ingested_at=[99.0], now=100.0)
    aggregator.holding(4)
    exported |= exported_sample_names(aggregator.exposition()[0].decode())
    missing = sorted(dashboard_metric_names() - exported)
    assert not missing, missing


# --------------------------------------------------------------------------- versions


def _constraints() -> dict[str, str]:
    return _freeze_constraints().read_constraints()


def _make_default(name: str) -> str:
    found = re.search(rf"^{name} \?= (.+)$", MAKEFILE.read_text(encoding="utf-8"), re.M)
    assert found, f"Makefile sets no default {name}"
    return found.group(1).strip()


def test_constraints_are_the_tested_environment() -> None:
    """deploy/constraints.txt pins exactly what this (tested) environment holds of what
    the images install; `make constraints` regenerates it."""
    freeze = _freeze_constraints()
    diff = freeze.differences(freeze.read_constraints(), freeze.installed_pins())
    assert not diff, "deploy/constraints.txt is not the tested environment:\n" + "\n".join(diff)


def test_constraints_check_reports_a_version_that_differs() -> None:
    freeze = _freeze_constraints()
    installed = freeze.installed_pins()
    pinned = dict(installed, numpy="1.0.0")
    del pinned["orjson"]
    diff = freeze.differences(pinned, installed)
    assert any(line.startswith("numpy: pinned 1.0.0") for line in diff)
    assert any(line.startswith("orjson==") and "not pinned" in line for line in diff)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_versions_agree_with_the_constraints(dockerfile: Path) -> None:
    """Torch pin, Python image and wheel index agree with deploy/constraints.txt, the
    Makefile and what PyTorch publishes; every other install is constrained."""
    pins = _constraints()
    docker = Dockerfile(dockerfile)
    args = docker.args()
    assert args["TORCH_SPEC"] == f"torch=={pins['torch']}" == _make_default("TORCH_SPEC")
    # The image's Python is the tested one: the constraints were resolved for it.
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+-slim-\w+", image), image
    assert image.split(":")[1].split("-")[0] == "{}.{}".format(*sys.version_info[:2])
    froms = [rest for word, rest in docker.instructions if word == "FROM"]
    assert froms and all(rest.startswith("${PYTHON_IMAGE} AS ") for rest in froms)
    index = args["TORCH_INDEX"]
    base, _, build = index.rpartition("/")
    assert base == "https://download.pytorch.org/whl"
    release = ".".join(pins["torch"].split(".")[:2])
    if dockerfile.name == "Dockerfile":
        assert build == "cpu" and index == _make_default("TORCH_INDEX")
    else:
        assert release in TORCH_CUDA_BUILDS, f"check PyTorch's CUDA builds of {release}"
        assert build in TORCH_CUDA_BUILDS[release], f"torch {release} has no {build} wheels"
        digits = build.removeprefix("cu")
        assert args["CUDA_VERSION"] == f"{digits[:-1]}.{digits[-1]}"
        assert 'NVIDIA_REQUIRE_CUDA="cuda>=${CUDA_VERSION}"' in " ".join(
            rest for _, rest in docker.stage("runtime")
        )
    # Order and sources of the installs in the build stage.
    pips = [cmd for cmd in docker.runs("build") if cmd.startswith("pip install")]
    assert "--upgrade pip setuptools" in pips[0], "pip/setuptools must come before torch"
    assert pips[1] == 'pip install --no-deps --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"'
    for cmd in (pips[0], *pips[2:]):
        assert "--constraint /tmp/constraints.txt" in cmd, cmd
    copied = [rest for word, rest in docker.stage("build") if word == "COPY"]
    assert "deploy/constraints.txt /tmp/constraints.txt" in copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_compiles_bytecode_for_the_read_only_runtime(dockerfile: Path) -> None:
    """The runtime user cannot write /opt/venv: the build stage leaves compiled bytecode
    that stays valid after COPY (hash-based), after any __pycache__ removal."""
    runs = Dockerfile(dockerfile).runs("build")
    compiled = [i for i, cmd in enumerate(runs) if "compileall" in cmd]
    assert compiled, "no compileall in the build stage"
    assert "--invalidation-mode unchecked-hash" in runs[compiled[-1]]
    assert "/opt/venv" in runs[compiled[-1]]
    removed = [i for i, cmd in enumerate(runs) if "__pycache__" in cmd and "rm " in cmd]
    assert all(i < compiled[-1] for i in removed)
    env = " ".join(rest for word, rest in Dockerfile(dockerfile).stage("build") if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE" not in env


def test_compose_images_are_pinned() -> None:
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        if service.get("build"):
            assert image.startswith("interest-stream:"), name
            continue
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.match(r"v?\d+\.\d+\.\d+$", tag), (name, image)


# --------------------------------------------------------------------------- health checks


def _service_settings(service: dict[str, Any]):
    """The settings a container of this service reads: its INTEREST_CONFIG (a file of
    configs/, which is mounted and baked in) with its INTEREST__ overrides."""
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    config = env["INTEREST_CONFIG"]
    assert config.startswith("/app/configs/"), config
    env["INTEREST_CONFIG"] = str(ROOT / "configs" / config.removeprefix("/app/configs/"))
    return load_settings(None, env)


def _image_healthcheck(service: dict[str, Any]) -> str | None:
    build = service["build"]
    docker = Dockerfile(ROOT / build["context"] / build.get("dockerfile", "Dockerfile"))
    checks = [rest for word, rest in docker.stage("runtime") if word == "HEALTHCHECK"]
    return checks[-1] if checks else None


def _listener_ports(kafka: dict[str, Any]) -> set[int]:
    listeners = kafka["environment"]["KAFKA_LISTENERS"].split(",")
    return {int(listener.rsplit(":", 1)[1]) for listener in listeners}


def test_compose_healthchecks_point_at_ports_the_services_serve() -> None:
    """Every health check that runs probes a port its own container listens on; the
    one-shot services, which listen on none, have theirs disabled."""
    from consumers.healthcheck import healthz_url

    services = _compose()["services"]
    checked = set()
    for name, service in services.items():
        health = service.get("healthcheck") or {}
        if health.get("disable"):
            assert service.get("restart") == "no", f"{name}: only one-shot services go unchecked"
            continue
        if "test" in health:
            test = " ".join(health["test"])
            for host, port in re.findall(r"([\w.-]+):(\d+)", test):
                assert host in (name, service.get("hostname"), "localhost", "127.0.0.1"), test
                assert name == "kafka" and int(port) in _listener_ports(service), (name, port)
            checked.add(name)
            continue
        if not service.get("build"):
            continue  # prometheus, grafana: their images declare no HEALTHCHECK
        probe = _image_healthcheck(service)
        assert probe and "consumers.healthcheck" in probe, name
        # The image's probe asks /healthz on metrics.port: `worker` and `trainer` serve it
        # there, and `aggregate` does when its items.metrics_port is set to the same port.
        settings = _service_settings(service)
        if service["command"] == ["aggregate"]:
            assert settings.items.metrics_port == settings.metrics.port, name
        else:
            assert service["command"][0] in ("worker", "trainer"), (
                f"{name} inherits the worker's healthcheck"
            )
        url = healthz_url(settings)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert str(port) in [str(p) for p in service.get("expose", [])], (name, port)
        assert settings.metrics.host == "0.0.0.0", f"{name}: Prometheus scrapes it over the network"
        checked.add(name)
    assert {"kafka", "worker", "worker-gpu", "trainer", "aggregator"} <= checked
    assert services["topics"]["healthcheck"] == {"disable": True}
    assert services["replay"]["healthcheck"] == {"disable": True}


def test_gpu_worker_is_a_profile_with_a_gpu_reservation() -> None:
    services = _compose()["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.cuda"
    assert _service_settings(gpu).encoder.device == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["depends_on"] == services["worker"]["depends_on"]
    assert _service_settings(gpu).kafka.bootstrap_servers == "kafka:29092"
    sd = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))["scrape_configs"][0]
    assert "worker-gpu" in sd["dns_sd_configs"][0]["names"]
    assert sd["dns_sd_configs"][0]["port"] == _service_settings(gpu).metrics.port


def test_healthcheck_probe_follows_the_configured_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe reads metrics.port from the settings (file + INTEREST__ overrides) and
    passes only while the worker's /healthz says alive."""
    from consumers.health import HealthServer
    from consumers.healthcheck import main as probe

    reasons: list[str] = []
    server = HealthServer(
        "127.0.0.1",
        0,
        render_metrics=lambda: (b"", "text/plain"),
        liveness=lambda: reasons,
        readiness=lambda: [],
    )
    monkeypatch.setenv("INTEREST_CONFIG", str(ROOT / "configs" / "docker.toml"))
    with server:
        monkeypatch.setenv("INTEREST__METRICS__PORT", str(server.port))
        assert probe([]) == 0
        reasons.append("loop stalled")
        assert probe([]) == 1
    assert probe([]) == 1  # nothing listens any more
    monkeypatch.setenv("INTEREST__METRICS__ENABLED", "false")
    assert probe([]) == 1


# --------------------------------------------------------------------------- demo data


class _RecordingProducer:
    """Stands in for KafkaProducer at the broker boundary: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None):
        from kafka.future import Future

        self.sent.append(value or b"")
        future = Future()
        future.success(None)
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_compose_demo_replay_sends_events_dated_now(tmp_path: Path) -> None:
    """The compose `replay` service's own commands: the generated log is dated in the
    past, and what its replay step sends is dated when it is sent (the dashboard's
    event-to-publish latency then measures the pipeline). Pacing is dropped here."""
    import argparse

    import orjson

    from consumers.cli import main as interest
    from producers import replay as replay_command

    script = _compose()["services"]["replay"]["command"][0].replace("/tmp/demo", str(tmp_path))
    steps = [shlex.split(step) for step in script.split("&&")]
    assert [step[:2] for step in steps] == [
        ["interest", "generate"],
        ["interest", "catalog"],
        ["interest", "replay"],
    ]
    assert interest(steps[0][1:]) == 0
    parser = argparse.ArgumentParser()
    replay_command.configure(parser)
    args = parser.parse_args(steps[2][2:])
    generated = [orjson.loads(line)["ts"] for line in Path(args.file).read_bytes().splitlines()]
    started = time.time()
    assert min(generated) < started - 86400  # the log itself is old
    producer = _RecordingProducer()
    summary = replay_command.replay(
        args.file,
        _service_settings(_compose()["services"]["replay"]),
        send_invalid=args.send_invalid,
        retime=args.retime,
        progress=False,
        producer=producer,  # type: ignore[arg-type]
    )
    finished = time.time()
    assert summary.ok and summary.sent == len(generated)
    sent = [orjson.loads(value) for value in producer.sent]
    assert all(started - 0.001 <= event["ts"] <= finished + 0.001 for event in sent)
    original = {
        e["event_id"]: e for e in map(orjson.loads, Path(args.file).read_bytes().splitlines())
    }
    for event in sent[:50]:
        assert {k: v for k, v in event.items() if k != "ts"} == {
            k: v for k, v in original[event["event_id"]].items() if k != "ts"
        }
