"""Offline engine timing: img/s and latency percentiles per engine x precision x batch size.

Warm-up iterations are excluded; each configuration runs for at least ``duration_s`` and at least
``min_iters`` iterations on the same pre-made input, so only the engine is timed.
"""

from __future__ import annotations

import time

import numpy as np

from resnet_serve.engines import Engine


def percentiles_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {
        "latency_ms_mean": round(float(ms.mean()), 4),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 4),
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 4),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 4),
    }


def time_engine(
    engine: Engine,
    batch: np.ndarray,
    *,
    duration_s: float,
    min_iters: int = 5,
    warmup: int = 3,
    max_iters: int = 100_000,
) -> dict:
    """Time ``engine.infer(batch)`` repeatedly; returns throughput and latency figures."""
    for _ in range(warmup):
        engine.infer(batch)
    times: list[float] = []
    start = time.perf_counter()
    while (len(times) < min_iters or time.perf_counter() - start < duration_s) and len(times) < max_iters:
        t0 = time.perf_counter()
        engine.infer(batch)
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {
        "batch_size": int(len(batch)),
        "iterations": len(times),
        "seconds": round(total, 3),
        "throughput_img_s": round(len(batch) * len(times) / total, 2),
        **percentiles_ms(times),
    }
