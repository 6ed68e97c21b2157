"""What every measurement report says about how it was made, in one place.

``interest bench``, ``soak``, ``demo`` and ``eval`` all write: the machine the numbers
came from, the git state of the code, the command that reproduces them, memory, latency
percentiles, and Prometheus readings of a worker. These helpers are theirs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "command_line",
    "git_state",
    "histogram_totals",
    "machine_info",
    "percentiles",
    "rss_bytes",
    "rss_mib",
]

_ROOT = Path(__file__).resolve().parents[2]


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, Python, torch, GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": "",
        "memory_bytes": None,
        "gpu": None,
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as handle:
            first = handle.readline().split()
            info["memory_bytes"] = int(first[1]) * 1024
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def git_state() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout this runs from
    (tracked files only; None where git or the repository is not there)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def command_line(
    command: str, args: argparse.Namespace, *, skip: Iterable[str] = ("command", "log_level")
) -> str:
    """The ``interest COMMAND ...`` that reproduces a run: as typed (``sys.argv``) when
    this process was started with it, else rebuilt from the parsed ``args`` (flags in
    their order, positional-free; ``skip`` names arguments left out)."""
    if command in sys.argv[1:]:
        return shlex.join(["interest", *sys.argv[1:]])
    parts = ["interest", command]
    left_out = set(skip)
    for key, value in vars(args).items():
        if key.startswith("_") or key in left_out or value in (None, False, ""):
            continue
        flag = "--" + key.replace("_", "-")
        parts.extend([flag] if value is True else [flag, str(value)])
    return shlex.join(parts)


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size (bytes) of ``pid`` (default: this process), from /proc; None
    when the process is gone or /proc is unavailable."""
    try:
        if pid is None:
            with open("/proc/self/statm", encoding="ascii") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mib(pid: int | None = None) -> float | None:
    """:func:`rss_bytes` in MiB."""
    size = rss_bytes(pid)
    return None if size is None else size / (1024.0 * 1024.0)


def percentiles(
    values: Sequence[float], points: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """``{"p50": ..., ...}`` of ``values`` (same unit), or an empty dict for no values."""
    if not len(values):
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{p:g}": float(np.percentile(array, p)) for p in points}


def histogram_totals(registry: Any, name: str) -> dict[str, float]:
    """A Prometheus histogram's ``{"total_s": sum, "batches": count}`` read from
    ``registry`` (a ``CollectorRegistry``; 0.0 where it has no sample yet)."""
    total = registry.get_sample_value(f"{name}_sum") or 0.0
    count = registry.get_sample_value(f"{name}_count") or 0.0
    return {"total_s": total, "batches": count}
