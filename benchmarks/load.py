"""Load generator against a Triton server, in the spirit of perf_analyzer: the client's own data planes,
tritonclient's ``grpc.aio`` over gRPC and ``client.wire.HttpWire`` over HTTP (as ``AsyncClassifier`` sends).

* closed loop: ``concurrency`` workers each keep one request in flight for ``duration_s``;
* open loop: requests start at a fixed ``rate_rps`` whatever the responses do (bounded in flight).

Both are bounded in time and request count and talk only to the given URL. Triton's statistics API
is read before and after, so each run also reports the server-side time per request (queue,
compute input, compute infer, compute output) and the average batch size the dynamic batcher formed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from resnet_serve.benchmarks.offline import percentiles_ms
from resnet_serve.client.core import Security
from resnet_serve.client.wire import HttpWire


@dataclass
class Payload:
    """What one request carries: ``inputs`` (a list of numpy batches, cycled) for ``model``."""

    model: str
    input_name: str
    datatype: str  # BYTES, FP32, UINT8
    batches: list[np.ndarray]
    kind: str  # "jpeg" (ensemble) or "tensor" (classifier)
    output_name: str = "logits"

    @property
    def images_per_request(self) -> int:
        return len(self.batches[0])


def _module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    return module


def _request(module, payload: Payload, i: int):
    batch = payload.batches[i % len(payload.batches)]
    tensor = module.InferInput(payload.input_name, list(batch.shape), payload.datatype)
    tensor.set_data_from_numpy(batch)
    return [tensor]


async def _stats(client, protocol: str, models: list[str]) -> dict:
    out = {}
    for model in models:
        kwargs = {"as_json": True} if protocol == "grpc" else {}
        kwargs.update(Security.from_files().header_kwargs(protocol))  # statistics: behind the key off loopback
        stats = (await client.get_inference_statistics(model, **kwargs))["model_stats"][0]
        inference = stats["inference_stats"]
        out[model] = {
            "inference_count": int(stats.get("inference_count", 0)),
            "execution_count": int(stats.get("execution_count", 0)),
            **{
                f"{k}_ns": int(inference.get(k, {}).get("ns", 0))
                for k in ("queue", "compute_input", "compute_infer", "compute_output", "success")
            },
            "success_count": int(inference.get("success", {}).get("count", 0)),
        }
    return out


def server_breakdown(before: dict, after: dict) -> dict:
    """Per-model average server-side milliseconds per request, and the average executed batch size."""
    result = {}
    for model, end in after.items():
        start = before[model]
        requests = end["success_count"] - start["success_count"]
        inferences = end["inference_count"] - start["inference_count"]
        executions = end["execution_count"] - start["execution_count"]
        if requests <= 0:
            continue
        result[model] = {
            **{
                f"{k}_ms": round((end[f"{k}_ns"] - start[f"{k}_ns"]) / requests / 1e6, 4)
                for k in ("queue", "compute_input", "compute_infer", "compute_output", "success")
            },
            "requests": requests,
            "executions": executions,
            "avg_batch_size": round(inferences / executions, 2) if executions else None,
        }
    return result


async def run_load(
    url: str,
    protocol: str,
    payload: Payload,
    *,
    stats_models: list[str],
    concurrency: int | None = None,
    rate_rps: float | None = None,
    duration_s: float = 5.0,
    max_requests: int = 1_000_000,
    max_in_flight: int = 512,
    timeout_s: float = 60.0,
) -> dict:
    """One load run (closed loop with ``concurrency``, or open loop with ``rate_rps``)."""
    if (concurrency is None) == (rate_rps is None):
        raise ValueError("give exactly one of concurrency (closed loop) or rate_rps (open loop)")
    module = _module(protocol)
    client = module.InferenceServerClient(url)  # statistics, and the gRPC data plane
    wire = HttpWire(url) if protocol == "http" else None
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            if wire is not None:
                batch = payload.batches[i % len(payload.batches)]
                await wire.infer(
                    payload.model, payload.input_name, batch, payload.datatype, payload.output_name, timeout_s=timeout_s
                )
            else:
                await client.infer(payload.model, _request(module, payload, i), client_timeout=timeout_s)
            latencies.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            errors.append(str(exc)[:200])

    try:
        before = await _stats(client, protocol, stats_models)
        start = time.perf_counter()
        deadline = start + duration_s
        if concurrency is not None:

            async def worker() -> None:
                nonlocal issued
                while time.perf_counter() < deadline and issued < max_requests:
                    issued += 1
                    await one(issued)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks: set[asyncio.Task] = set()
            interval = 1.0 / rate_rps
            dropped = 0
            while issued < max_requests:
                due = start + issued * interval
                if due >= deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if len(tasks) >= max_in_flight:
                    dropped += 1  # the server cannot keep up: do not pile up unbounded work
                    issued += 1
                    continue
                issued += 1
                task = asyncio.create_task(one(issued))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
            if dropped:
                errors += [f"not sent: {max_in_flight} requests already in flight"] * dropped
        elapsed = time.perf_counter() - start
        after = await _stats(client, protocol, stats_models)
    finally:
        await client.close()
        if wire is not None:
            await wire.close()
    images = len(latencies) * payload.images_per_request
    result = {
        "model": payload.model,
        "protocol": protocol,
        "payload": payload.kind,
        "images_per_request": payload.images_per_request,
        "mode": "closed" if concurrency is not None else "open",
        "concurrency": concurrency,
        "rate_rps": rate_rps,
        "duration_s": round(elapsed, 3),
        "requests_ok": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "throughput_img_s": round(images / elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "server": server_breakdown(before, after),
    }
    if latencies:
        result.update(percentiles_ms(latencies))
    return result
