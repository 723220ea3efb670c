"""Top-1/top-5 of every engine on the labelled test split: offline (engine.infer on the preprocessed images)
and served (the encoded images through each Triton ensemble, and through the network's default model where
the tune step made it a one-step model), with per-image agreement between the two.
Scoring is ``resnets.metrics``, as in export and evaluation. The served path is torch-free."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from resnet_serve.engines import load_engine
from resnet_serve.resnets.console import progress
from resnet_serve.resnets.metrics import accuracy_report, top1_agreement_pct

log = logging.getLogger(__name__)


def summarize(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    report = accuracy_report(logits, labels, classes)
    return {"n": report["n"], "top1_pct": report["top1"], "top5_pct": report["top5"]}


async def _served_logits(
    url: str, protocol: str, model: str, encoded: list[bytes], batch_size: int, concurrency: int, raw: bool
):
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    client = module.InferenceServerClient(url)
    semaphore = asyncio.Semaphore(concurrency)
    if raw:  # a one-step model with a ragged UINT8 input: one encoded file per request
        batch_size = 1

    async def one(start: int) -> np.ndarray:
        if raw:
            data = np.frombuffer(encoded[start], dtype=np.uint8)[None, :]
            tensor = module.InferInput("image", list(data.shape), "UINT8")
        else:
            data = np.array([[b] for b in encoded[start : start + batch_size]], dtype=np.object_)
            tensor = module.InferInput("image", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        async with semaphore:
            result = await client.infer(model, [tensor])
        return result.as_numpy("logits")

    try:
        parts = await asyncio.gather(*(one(s) for s in range(0, len(encoded), batch_size)))
    finally:
        await client.close()
    return np.concatenate(parts)


def served_logits(
    url: str,
    protocol: str,
    model: str,
    encoded: list[bytes],
    *,
    batch_size: int = 64,
    concurrency: int = 4,
    raw: bool = False,
) -> np.ndarray:
    """Logits of a model that takes encoded images (an ensemble or a one-step model; ``raw``: its input is
    one file per request as UINT8 bytes), in order."""
    return asyncio.run(_served_logits(url, protocol, model, encoded, batch_size, concurrency, raw))


def agreement(served: np.ndarray, offline: np.ndarray) -> dict:
    """How often the served and offline logits of the same images give the same top-1."""
    return {
        "top1_agreement_with_offline_pct": top1_agreement_pct(served, offline),
        "top1_disagreements_with_offline": int((served.argmax(1) != offline.argmax(1)).sum()),
    }


def run_accuracy(ctx, grpc_url: str | None) -> list[dict]:
    """Rows per model: PyTorch FP32 and every engine offline (where the suite runs engines here), every
    served ensemble through ``grpc_url``; deltas against PyTorch FP32 when it was measured."""
    rows = []
    for model in ctx.suite.models:
        images = ctx.images(model)
        if images is None or images.labels is None:
            log.info("accuracy: skipping %s (no labelled %s test set here)", model, ctx.spec(model).name)
            continue
        spec, labels, classes = ctx.spec(model), images.labels, images.classes
        records, offline = [], {}
        if ctx.suite.offline_accuracy:
            from resnet_serve.engines.pytorch import TorchEngine

            summary = ctx.exports[model]
            normalized = images.normalized(spec)
            if summary.model.checkpoint is not None:
                torch_engine = TorchEngine.from_checkpoint(summary.model.checkpoint, threads=ctx.threads)
                reference = torch_engine.infer_all(normalized)
                records.append(
                    {
                        "engine": "pytorch",
                        "precision": "fp32",
                        "where": "offline",
                        **summarize(reference, labels, classes),
                    }
                )
            else:
                log.info("accuracy %s: exported from ONNX, so no PyTorch reference row", model)
            wanted = [a for a in summary.artifacts if ctx.wanted(a.engine, a.precision) and a.runnable]
            for artifact in progress(wanted, f"accuracy {model}"):
                logits = load_engine(artifact.path, threads=ctx.threads).infer_all(normalized)
                offline[artifact.name] = logits
                records.append(
                    {
                        "engine": artifact.engine,
                        "precision": artifact.precision,
                        "where": "offline",
                        **summarize(logits, labels, classes),
                    }
                )
        if grpc_url and ctx.suite.served:
            for served in ctx.served_engines(model):
                logits = served_logits(grpc_url, "grpc", served.ensemble, images.encoded)
                records.append(
                    {
                        "engine": served.engine,
                        "precision": served.precision,
                        "where": "served",
                        "served_model": served.ensemble,
                        **summarize(logits, labels, classes),
                        **(agreement(logits, offline[served.key]) if served.key in offline else {}),
                    }
                )
            network = ctx.index.network(model)
            if network.default_model and network.default_path != "ensemble":  # the tuned default: one-step model
                default = network.default_engine
                raw = network.default_path == "direct-raw"
                concurrency = 16 if raw else 4
                logits = served_logits(
                    grpc_url, "grpc", network.default_model, images.encoded, raw=raw, concurrency=concurrency
                )
                records.append(
                    {
                        "engine": default.engine,
                        "precision": default.precision,
                        "where": f"served as {network.default_model} ({network.default_path})",
                        "served_model": network.default_model,
                        **summarize(logits, labels, classes),
                        **(agreement(logits, offline[default.key]) if default.key in offline else {}),
                    }
                )
        base = next((r for r in records if r["engine"] == "pytorch" and r["where"] == "offline"), None)
        for r in records:
            r["model"] = model
            if base:
                r["top1_delta_pct"] = round(r["top1_pct"] - base["top1_pct"], 2)
                r["top5_delta_pct"] = round(r["top5_pct"] - base["top5_pct"], 2)
            log.info(
                "accuracy %-8s %-12s %-5s %-8s top-1 %.2f%% (%s)  top-5 %.2f%%",
                model,
                r["engine"],
                r["precision"],
                r["where"],
                r["top1_pct"],
                f"{r['top1_delta_pct']:+.2f}" if base else "no FP32 reference in this run",
                r["top5_pct"],
            )
        rows += records
    return rows
