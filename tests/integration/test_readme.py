"""The README's "Using it" sequence runs as written (scaled down), pasted into bash.

The block is read from README.md itself, so an edit that breaks the sequence breaks this
test. Only the data size is scaled down; the broker port, the encoder (hashing, to skip
loading the model) and the micro-batch size come from environment overrides, as a user
would set them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from producers.broker import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-sequence:"
SCALE = {
    "interest generate --out data/synth": (
        "interest generate --out data/synth --users 30 --items 100 --events 1500"
    ),
}


def readme_sequence() -> str:
    """The bash block that follows the readme-sequence marker in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text[text.index(MARKER) :]
    found = re.search(r"```bash\n(.*?)```", after, re.S)
    assert found, "no bash block after the readme-sequence marker"
    return found.group(1)


def test_the_using_it_sequence_runs_as_written(tmp_path: Path) -> None:
    script = readme_sequence()
    for original, scaled in SCALE.items():
        assert original in script, f"README no longer runs {original!r}"
        script = script.replace(original, scaled)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])  # `source .venv/...`
    port = free_port()
    env = {
        **os.environ,
        "INTEREST__BROKER__PORT": str(port),
        "INTEREST__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "INTEREST__ENCODER__BACKEND": "hashing",
        "INTEREST__BATCH__MAX_EVENTS": "16",  # many small batches: u7 gets several records
        "INTEREST__METRICS__PORT": "0",
        "OMP_NUM_THREADS": "1",
    }
    # errexit: a failing step fails the test; the stop line tolerates a finished replay.
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    logs = {p.name: p.read_text(errors="replace")[-1500:] for p in (tmp_path / "logs").glob("*")}
    context = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}\nlogs: {logs}"
    assert done.returncode == 0, context
    out = done.stdout
    # subscribe printed u7's records (3 headers "u7  vN  event ...") and said what it waited for
    assert len(re.findall(r"^u7  v\d+  event ", out, re.M)) == 3, context
    assert "waiting for recommendations for user u7" in done.stderr, context
    # inspect printed what the state topic holds about u7
    assert re.search(r"^user u7  version \d+", out, re.M), context
    assert re.search(r"^  events applied  \w+ \d+", out, re.M), context
