"""Helpers shared by the deployment tests: what the Grafana dashboard queries, what a
Prometheus exposition text exports, and what the Dockerfiles say (build arguments,
instructions per stage), read statically since no Docker engine runs here."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "DASHBOARD",
    "TORCH_CUDA_BUILDS",
    "Dockerfile",
    "base_metric_name",
    "dashboard_expressions",
    "dashboard_metric_names",
    "exported_sample_names",
]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "interest-stream.json"

#: CUDA wheel indexes PyTorch publishes per release (download.pytorch.org/whl/<tag>).
#: Source: pytorch/pytorch RELEASE.md, "Release Compatibility Matrix": 2.13 has stable
#: CUDA 12.6 and 13.0 and experimental 13.2; CUDA 12.8 was dropped in 2.12 (RFC
#: pytorch/pytorch#178665). Add a row when TORCH_SPEC moves to another release.
TORCH_CUDA_BUILDS: dict[str, set[str]] = {"2.13": {"cu126", "cu130", "cu132"}}


class Dockerfile:
    """A Dockerfile read as instructions (continuation lines joined, comments dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
        self.instructions: list[tuple[str, str]] = []  # (INSTRUCTION, rest), in order
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                word, _, rest = line.partition(" ")
                self.instructions.append((word.upper(), " ".join(rest.split())))

    def args(self) -> dict[str, str]:
        """Every ``ARG NAME=default`` (any stage; later ones win)."""
        found: dict[str, str] = {}
        for word, rest in self.instructions:
            if word == "ARG" and "=" in rest:
                name, _, value = rest.partition("=")
                found[name] = value.strip('"')
        return found

    def stage(self, name: str) -> list[tuple[str, str]]:
        """The instructions of the stage ``FROM ... AS name``."""
        out: list[tuple[str, str]] = []
        inside = False
        for word, rest in self.instructions:
            if word == "FROM":
                inside = rest.lower().endswith(f" as {name}")
                continue
            if inside:
                out.append((word, rest))
        return out

    def runs(self, stage: str) -> list[str]:
        """The shell commands of a stage's RUN instructions, split at ``&&``."""
        return [
            part.strip()
            for word, rest in self.stage(stage)
            if word == "RUN"
            for part in rest.split("&&")
        ]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the Grafana dashboard."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def dashboard_metric_names() -> set[str]:
    """Metric sample names the dashboard queries (``interest_..._bucket`` etc.)."""
    names: set[str] = set()
    for expr in dashboard_expressions():
        names.update(re.findall(r"\binterest_[a-z0-9_]+", expr))
    return names


def base_metric_name(sample: str) -> str:
    """``interest_x_seconds_bucket`` -> ``interest_x_seconds``; counters keep ``_total``."""
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


def exported_sample_names(exposition: str) -> set[str]:
    """Sample names a /metrics text can carry: those present, and those of labelled
    families that have no child yet (a counter by reason before the first dead letter)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("_sum", "_count", "_created"),
    }
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
