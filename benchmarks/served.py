"""Served load against Triton: closed-loop concurrency sweeps (gRPC and HTTP, JPEG to the ensemble, tensors
to the classifier) and open-loop rates, each with Triton's server-side breakdown. torch-free."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from resnet_serve.benchmarks.load import Payload, run_load
from resnet_serve.client.core import prepare_all
from resnet_serve.client.sync import Connection
from resnet_serve.errors import UsageError
from resnet_serve.resnets.console import progress

log = logging.getLogger(__name__)

JPEG_REQUESTS = 256  # distinct single-image requests cycled by the load generator
TENSOR_REQUESTS = 64


def payloads(ctx, model: str, served, grpc_url: str) -> tuple[Payload, Payload]:
    """One JPEG per request to the ensemble, and the classifier's own input (made as the client makes it)."""
    images = ctx.images(model)
    if images is None:
        raise UsageError(f"served load for {model} needs sample images (none under {ctx.imagenet_dir})")
    encoded = images.encoded[:JPEG_REQUESTS]
    jpeg = Payload(served.ensemble, "image", "BYTES", [np.array([[b]], dtype=np.object_) for b in encoded], "jpeg")
    connection = Connection(grpc_url, "grpc", 60.0)
    try:
        info = connection.model_info(served.classifier)
    finally:
        connection.close()
    tensors = prepare_all(info, encoded[:TENSOR_REQUESTS])
    tensor = Payload(
        served.classifier,
        info.input_name,
        info.input_datatype,
        [tensors[i : i + 1] for i in range(len(tensors))],
        "tensor",
    )
    return jpeg, tensor


def run_served(ctx, grpc_url: str, http_url: str | None) -> list[dict]:
    suite = ctx.suite
    rows = []
    for model in suite.models:
        network = ctx.index.network(model)
        for served in ctx.served_engines(model):
            jpeg, tensor = payloads(ctx, model, served, grpc_url)
            stats = [served.ensemble, network.preprocess, served.classifier]
            runs = [("grpc", jpeg, c) for c in suite.concurrency]
            runs += [("http", jpeg, c) for c in suite.http_concurrency if http_url]
            runs += [("grpc", tensor, c) for c in suite.tensor_concurrency]
            peak = None
            for protocol, payload, concurrency in progress(runs, f"served {served.ensemble}"):
                result = asyncio.run(
                    run_load(
                        grpc_url if protocol == "grpc" else http_url,
                        protocol,
                        payload,
                        stats_models=stats if payload is jpeg else [served.classifier],
                        concurrency=concurrency,
                        duration_s=suite.served_duration_s,
                    )
                )
                rows.append(record(model, served, result))
                if payload is jpeg and protocol == "grpc":
                    peak = max(peak or 0.0, result["throughput_rps"])
            for fraction in suite.open_loop_fractions if peak else ():
                rate = round(max(1.0, peak * fraction), 1)
                result = asyncio.run(
                    run_load(
                        grpc_url, "grpc", jpeg, stats_models=stats, rate_rps=rate, duration_s=suite.served_duration_s
                    )
                )
                rows.append(record(model, served, result))
    return rows


def record(model: str, served, result: dict) -> dict:
    row = {"arch": model, "engine": served.key, **result}
    load = f"c={row['concurrency']}" if row["mode"] == "closed" else f"{row['rate_rps']} req/s"
    log.info(
        "served %-38s %-4s %-6s %-11s %9.1f img/s  p50 %s ms  p99 %s ms  errors %d",
        row["model"],
        row["protocol"],
        row["payload"],
        load,
        row["throughput_img_s"],
        row.get("latency_ms_p50"),
        row.get("latency_ms_p99"),
        row["errors"],
    )
    return row
