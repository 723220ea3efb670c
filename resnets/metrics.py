"""The one path from images to logits to accuracy, shared by evaluation, training, export and benchmarks.

numpy only: ``predict_chunked`` takes any function from a batch to logits (an engine's ``infer``, a
PyTorch forward pass), so every consumer runs images in chunks and scores them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def predict_chunked(forward: Callable[[Any], np.ndarray], images: Sequence, batch_size: int = 500) -> np.ndarray:
    """``forward`` on consecutive slices of ``images`` (numpy array or tensor), logits concatenated in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    parts = [np.asarray(forward(images[start : start + batch_size])) for start in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample booleans: top-1 correct, label within the top-k."""
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return logits.argmax(axis=1) == labels, (topk == labels[:, None]).any(axis=1)


def accuracy_report(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """``n``, ``top1``/``top5`` in percent and per-class top-1, from logits and labels."""
    top1, top5 = topk_correct(logits, labels)
    per_class = {
        name: round(100.0 * float(top1[labels == i].mean()), 2) for i, name in enumerate(classes) if (labels == i).any()
    }
    return {
        "n": int(len(labels)),
        "top1": round(100.0 * float(top1.mean()), 2),
        "top5": round(100.0 * float(top5.mean()), 2),
        "per_class": per_class,
    }


def top1_agreement_pct(logits: np.ndarray, reference: np.ndarray) -> float:
    """Percent of images whose top-1 class is the same in both (reference: logits or class indices)."""
    ref = reference.argmax(1) if reference.ndim == 2 else reference
    return round(100.0 * float((logits.argmax(1) == ref).mean()), 3)
