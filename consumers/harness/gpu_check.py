#!/usr/bin/env python3
"""Time the adaptation layer's training step on a GPU (and on the CPU for reference).

Needs only numpy and torch (it imports ``interest_core.adapter``, which imports nothing
beyond numpy, torch and the pure ``interest_core.settings``; the ``consumers`` and
``consumers.harness`` packages import nothing on their own: no faiss, no Kafka, no
transformers). Run from the repository root, as a module or by path::

    python3 -m consumers.harness.gpu_check          # CUDA (if any) and CPU, defaults
    python3 -m consumers.harness.gpu_check --steps 30 --batch-sizes 256,1024,4096 --cpu-steps 5
    python3 consumers/harness/gpu_check.py          # the same, by path

Prints one JSON object: the machine, then per device / precision / batch size the
median and p90 seconds of one optimiser step, examples per second, the first and last
loss (nats) of a short run on a synthetic co-consumption log (the loss must fall), and
for bf16/fp16 the loss on one fixed batch next to fp32's (they must agree closely).
Synthetic data: a 100,000-item catalog of random unit vectors (384 dims, the width of
all-MiniLM-L6-v2) in groups of 10 items consumed together.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import numpy as np
import torch

from interest_core.adapter import QUERY_KINDS, AdapterTrainer, ExampleBuffer


def synthetic(items: int, dim: int, examples: int, seed: int) -> tuple[np.ndarray, ExampleBuffer]:
    """A catalog of random unit vectors and a buffer of examples whose query is an item
    of a group of 10 and whose positive is another item of the same group."""
    rng = np.random.default_rng(seed)
    catalog = rng.normal(size=(items, dim)).astype(np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    buffer = ExampleBuffer(dim, examples)
    groups = items // 10
    for _ in range(examples):
        group = int(rng.integers(groups))
        before, after = group * 10 + rng.choice(10, size=2, replace=False)
        query = np.zeros((len(QUERY_KINDS), dim), dtype=np.float32)
        query[0] = catalog[before]
        query[1] = catalog[group * 10 : group * 10 + 10].mean(axis=0)
        buffer.add(query, int(after))
    return catalog, buffer


def time_steps(
    device: str,
    precision: str,
    batch_size: int,
    negatives: int,
    steps: int,
    catalog: np.ndarray,
    buffer: ExampleBuffer,
) -> dict[str, object]:
    """Seconds per optimiser step (after 3 warm-up steps) and the loss trend."""
    trainer = AdapterTrainer(
        catalog.shape[1],
        batch_size=batch_size,
        negatives=negatives,
        learning_rate=0.01,
        temperature=0.1,
        device=device,
        precision=precision,
        cpu_threads=0,
    )
    alive = np.ones(len(catalog), dtype=bool)
    warm = trainer.train(buffer, catalog, alive, steps=3)
    times: list[float] = []
    losses: list[float] = []
    for _ in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        report = trainer.train(buffer, catalog, alive, steps=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        losses.append(report.last_loss)
    median = statistics.median(times)
    ordered = sorted(times)
    return {
        "device": device,
        "precision": trainer.precision,
        "batch_size": batch_size,
        "negatives": negatives,
        "steps": steps,
        "step_s_median": median,
        "step_s_p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "examples_per_s": batch_size / median if median > 0 else None,
        "loss_first": warm.first_loss,
        "loss_last": losses[-1] if losses else None,
        "loss_fell": bool(losses) and losses[-1] < warm.first_loss,
    }


def same_batch_loss(
    device: str, precision: str, catalog: np.ndarray, buffer: ExampleBuffer
) -> float:
    """The loss of one fixed batch at the identity (no step), in ``precision``."""
    trainer = AdapterTrainer(
        catalog.shape[1], batch_size=512, negatives=1024, device=device, precision=precision
    )
    rng = np.random.default_rng(123)
    queries, rows = buffer.sample(512, rng)
    sampled = rng.choice(len(catalog), size=1024, replace=False)
    candidate_rows = np.concatenate([rows, sampled])
    q = torch.as_tensor(queries, device=device)
    c = torch.as_tensor(catalog[candidate_rows], device=device)
    r = torch.as_tensor(rows, device=device)
    cr = torch.as_tensor(candidate_rows, device=device)
    with torch.no_grad():
        if device.startswith("cuda") and precision != "fp32":
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                return float(trainer.loss(q, r, c, cr))
        return float(trainer.loss(q, r, c, cr))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="catalog items")
    parser.add_argument("--dim", type=int, default=384, help="vector width")
    parser.add_argument("--examples", type=int, default=50_000, help="buffered examples")
    parser.add_argument("--batch-sizes", default="256,1024,4096", help="examples per step")
    parser.add_argument("--negatives", type=int, default=1024, help="catalog negatives per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per GPU setting")
    parser.add_argument("--cpu-steps", type=int, default=5, help="timed CPU steps (0: none)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    started = time.perf_counter()
    catalog, buffer = synthetic(args.items, args.dim, args.examples, seed=0)
    out: dict[str, object] = {
        "command": " ".join(["python3", *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "items": args.items,
        "dim": args.dim,
        "weights_bytes_fp32": args.dim * args.dim * 4,
        "data_s": time.perf_counter() - started,
        "runs": [],
        "same_batch_loss": {},
    }
    runs: list[dict[str, object]] = []
    if torch.cuda.is_available():
        for precision in ("fp32", "bf16", "fp16"):
            for batch_size in batch_sizes:
                runs.append(
                    time_steps(
                        "cuda", precision, batch_size, args.negatives, args.steps, catalog, buffer
                    )
                )
        out["same_batch_loss"] = {
            p: same_batch_loss("cuda", p, catalog, buffer) for p in ("fp32", "bf16", "fp16")
        }
    if args.cpu_steps > 0:
        runs.append(
            time_steps(
                "cpu", "fp32", batch_sizes[0], args.negatives, args.cpu_steps, catalog, buffer
            )
        )
    out["runs"] = runs
    out["total_s"] = time.perf_counter() - started
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
