"""Does system shared memory help on loopback? Tensor requests to a classifier, in-band vs shared memory.

The same pre-made batch is sent repeatedly through ``client.Classifier`` with ``shared_memory`` off
and on; the figures are the client's round-trip times and Triton's server-side ``compute_input``
(the time to move the input into the backend), so transport and compute can be told apart.
"""

from __future__ import annotations

import time

from resnet_serve.benchmarks.offline import percentiles_ms
from resnet_serve.client.core import Security, prepare_all
from resnet_serve.client.sync import Classifier
from resnet_serve.export.repository import size_class

BATCH = {"small": 256, "large": 32}  # by input size, as the CPU profile batches


def _server_ms(client, model: str) -> tuple[int, dict]:
    headers = Security.from_files().header_kwargs("grpc")  # the statistics API is behind the key off loopback
    stats = client.get_inference_statistics(model, as_json=True, **headers)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"]), {k: int(stats[k]["ns"]) for k in ("compute_input", "compute_infer")}


def measure(url: str, model: str, images: list, *, batch_size: int, duration_s: float) -> list[dict]:
    rows = []
    for shared_memory in (False, True):
        with Classifier(url, "grpc", model, batch_size=batch_size, shared_memory=shared_memory) as clf:
            batch = prepare_all(clf.info, images[:batch_size])
            clf.infer(batch, 1)  # warm-up (and shared-memory registration)
            count0, ns0 = _server_ms(clf.client, model)
            times = []
            start = time.perf_counter()
            while time.perf_counter() - start < duration_s or len(times) < 5:
                t0 = time.perf_counter()
                clf.infer(batch, 1)
                times.append(time.perf_counter() - t0)
            count1, ns1 = _server_ms(clf.client, model)
        requests = max(1, count1 - count0)
        rows.append(
            {
                "model": model,
                "shared_memory": shared_memory,
                "batch_size": len(batch),
                "request_bytes": int(batch.nbytes),
                "requests": len(times),
                "throughput_img_s": round(len(batch) * len(times) / sum(times), 2),
                **percentiles_ms(times),
                "server_compute_input_ms": round((ns1["compute_input"] - ns0["compute_input"]) / requests / 1e6, 4),
                "server_compute_infer_ms": round((ns1["compute_infer"] - ns0["compute_infer"]) / requests / 1e6, 4),
            }
        )
    return rows


def run_transport(ctx, grpc_url: str) -> list[dict]:
    """In-band vs shared memory for each model's first served classifier, batches of real images."""
    rows = []
    for model in ctx.suite.models:
        network = ctx.index.network(model)
        encoded = ctx.images(model).encoded
        batch = BATCH[size_class(ctx.spec(model))]
        images = [encoded[i % len(encoded)] for i in range(batch)]
        classifier = network.engines[0].classifier
        rows += measure(grpc_url, classifier, images, batch_size=batch, duration_s=ctx.suite.served_duration_s)
    return rows


def summarize(rows: list[dict]) -> dict:
    """img/s with shared memory / without, per model."""
    out = {}
    for model in {r["model"] for r in rows}:
        off = next(r for r in rows if r["model"] == model and not r["shared_memory"])
        on = next(r for r in rows if r["model"] == model and r["shared_memory"])
        out[model] = round(on["throughput_img_s"] / off["throughput_img_s"], 3)
    return out
