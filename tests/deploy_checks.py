"""Helpers shared by the deployment tests: what the Grafana dashboard queries, and what
a Prometheus exposition text exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "DASHBOARD",
    "base_metric_name",
    "dashboard_expressions",
    "dashboard_metric_names",
    "exported_sample_names",
]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "interest-stream.json"


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
