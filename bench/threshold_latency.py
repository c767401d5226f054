"""Threshold statistics latency at 60k and 1M pseudo-labels (targets: <= 50 ms and <= 500 ms).

    python bench/threshold_latency.py
    python bench/threshold_latency.py --sizes 60000 1000000 --queries 200

What a user waits for when moving the threshold slider is one statistics query (count passing
per class, coverage, estimated and true precision) on an index built once per pseudo-label
round. The table shows both: the one-off build and the per-move query (median and p95 over
random global and per-class thresholds). The 60k row also times reading the round back from
SQLite, which the app does once per round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from mpl_core.workspace.calibration import ThresholdIndex, fit_calibration  # noqa: E402
from mpl_core.workspace.store import Store, summarize_probs  # noqa: E402

K = 10


def synthetic_round(n: int, rng: np.random.Generator):
    """Probabilities that look like a half-trained model's: peaked on a class, sometimes the wrong one."""
    truth = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, K)).astype(np.float32)
    logits[np.arange(n), truth] += rng.gamma(2.0, 1.5, n).astype(np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs, truth


def time_queries(index: ThresholdIndex, queries: int, rng) -> list[float]:
    times = []
    for q in range(queries):
        t = float(rng.uniform(0.1, 0.99)) if q % 2 else rng.uniform(0.1, 0.99, K).tolist()
        t0 = time.perf_counter()
        index.stats(t)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[60000, 1000000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| pseudo-labels | build index (once per round) | query median | query p95 | target | store read |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        probs, truth = synthetic_round(n, rng)
        label, conf, _, _ = summarize_probs(probs)
        val = rng.integers(0, n, 500)
        cal = fit_calibration(conf[val], label[val] == truth[val])
        t0 = time.perf_counter()
        index = ThresholdIndex(label, conf, K, cal, truth)
        build = (time.perf_counter() - t0) * 1000
        times = time_queries(index, args.queries, rng)
        p95 = sorted(times)[int(0.95 * len(times)) - 1]
        read = store_read_ms(probs) if n <= 100000 else None
        target = 50 if n <= 60000 else 500
        print(f"| {n:,} | {build:.0f} ms | {statistics.median(times):.3f} ms | {p95:.3f} ms | <= {target} ms | "
              f"{'-' if read is None else f'{read:.0f} ms'} |")


def store_read_ms(probs: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.sqlite")
        n = len(probs)
        store.add_pseudo_labels(1, "teacher", [f"train/{i:06d}" for i in range(n)], np.arange(n), probs, {})
        t0 = time.perf_counter()
        store.pseudo_labels()
        return (time.perf_counter() - t0) * 1000


if __name__ == "__main__":
    main()
