"""Offline engine timing: img/s and latency percentiles per engine x precision x batch size.

Warm-up iterations are excluded; each configuration runs for at least ``duration_s`` and at least
``min_iters`` iterations on the same pre-made input, so only the engine is timed. Engines run side by
side in one process on the same real images.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from resnet_serve.engines import Engine, EngineError, load_engine
from resnet_serve.resnets.console import progress

log = logging.getLogger(__name__)


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


def offline_engines(ctx, model: str) -> list[tuple[str, Engine]]:
    """(requested precision, engine) for every engine of the run: PyTorch peers, then the exported engines."""
    summary = ctx.exports[model]
    engines: list[tuple[str, Engine]] = []
    if "pytorch" in ctx.engines and summary.model.checkpoint is None:
        log.info("no PyTorch peers for %s: it was exported from ONNX", model)
    elif "pytorch" in ctx.engines:
        from resnet_serve.engines.pytorch import CUDA_MODES, CudaTorchEngine, TorchEngine

        for precision in ("fp32", "bf16"):
            if precision in ctx.precisions and (precision == "fp32" or ctx.suite.pytorch_bf16):
                engines.append(
                    (
                        precision,
                        TorchEngine.from_checkpoint(summary.model.checkpoint, precision=precision, threads=ctx.threads),
                    )
                )
        import torch

        if torch.cuda.is_available():
            engines += [("fp16", CudaTorchEngine(summary.model.checkpoint, mode)) for mode in CUDA_MODES]
    for artifact in summary.artifacts:
        if ctx.wanted(artifact.engine, artifact.precision):
            try:
                engines.append((artifact.precision, load_engine(artifact.path, threads=ctx.threads)))
            except EngineError as exc:
                log.warning("skipping %s: %s", artifact.name, exc)
    return engines


def run_offline(ctx) -> list[dict]:
    rows = []
    for model in ctx.suite.models:
        batch_sizes = ctx.batch_sizes(model)
        plan = [(e, b) for e in offline_engines(ctx, model) for b in batch_sizes]
        for (requested, engine), batch_size in progress(plan, f"offline {model}"):
            figures = time_engine(engine, ctx.batch(model, batch_size), duration_s=ctx.suite.offline_duration_s)
            info = engine.info()
            rows.append(
                {
                    "model": model,
                    "engine": info["engine"],
                    "precision": info["precision"],
                    "requested_precision": requested,
                    "threads": info["threads"],
                    "device": info["device"],
                    **figures,
                }
            )
            log.info(
                "offline %-9s %-12s %-5s batch %4d: %9.1f img/s  p50 %.2f ms",
                model,
                info["engine"],
                info["precision"],
                batch_size,
                figures["throughput_img_s"],
                figures["latency_ms_p50"],
            )
    for row in rows:
        ref = next(
            (
                r
                for r in rows
                if (r["model"], r["engine"], r["precision"], r["batch_size"])
                == (row["model"], "pytorch", "fp32", row["batch_size"])
            ),
            None,
        )
        if ref:
            row["vs_pytorch_fp32"] = round(row["throughput_img_s"] / ref["throughput_img_s"], 2)
    return rows
