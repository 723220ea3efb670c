"""Top-1/top-5 of every engine, offline (engine.infer on preprocessed images) and served (encoded
JPEG bytes through a Triton ensemble), with per-image agreement between the two."""

from __future__ import annotations

import asyncio

import numpy as np

from resnet_serve.resnets.evaluate import accuracy_report


def summarize(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    report = accuracy_report(logits, labels, classes)
    report.pop("per_class")
    return {"n": report["n"], "top1_pct": report["top1"], "top5_pct": report["top5"]}


def engine_logits(engine, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return np.concatenate([engine.infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


async def _served_logits(
    url: str, protocol: str, model: str, encoded: list[bytes], batch_size: int, concurrency: int
) -> np.ndarray:
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    client = module.InferenceServerClient(url)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(start: int) -> np.ndarray:
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
    url: str, protocol: str, model: str, encoded: list[bytes], *, batch_size: int = 64, concurrency: int = 4
) -> np.ndarray:
    """Logits of an ensemble for encoded images, in order."""
    return asyncio.run(_served_logits(url, protocol, model, encoded, batch_size, concurrency))


def agreement(served: np.ndarray, offline: np.ndarray) -> dict:
    """How often the served and offline logits of the same images give the same top-1."""
    same = served.argmax(1) == offline.argmax(1)
    return {
        "top1_agreement_with_offline_pct": round(100.0 * float(same.mean()), 3),
        "top1_disagreements_with_offline": int((~same).sum()),
    }
