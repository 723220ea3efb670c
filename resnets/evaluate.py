"""Evaluate a checkpoint: top-1, top-5, per-class accuracy and throughput.

    python -m resnets.evaluate --checkpoint checkpoints/resnet20.pt --data-dir ../shared/data/cifar-10-jpg --json

``--json`` prints one JSON object with ``top1``, ``top5`` (percent, 0..100), ``n``, ``per_class``,
``img_s``. Accuracy functions here are also used by training and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from resnet_serve.resnets.checkpoint import CheckpointError, load_checkpoint
from resnet_serve.resnets.data import DataLayoutError, ImageFolderDataset, Normalizer, load_cifar10, to_tensor_nchw
from resnet_serve.resnets.models import arch_spec
from resnet_serve.resnets.spec import ImageError

log = logging.getLogger("resnets.evaluate")


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample booleans: top-1 correct, label within the top-k."""
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return logits.argmax(axis=1) == labels, (topk == labels[:, None]).any(axis=1)


def accuracy_report(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """top1/top5 in percent plus per-class top-1, from logits and labels."""
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


@torch.no_grad()
def predict_arrays(
    model: torch.nn.Module,
    images: torch.Tensor,
    spec,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
) -> np.ndarray:
    """Logits for uint8 NCHW images, in order."""
    model.eval()
    normalizer = Normalizer(spec, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    outputs = []
    for start in range(0, len(images), batch_size):
        x = normalizer(images[start : start + batch_size].to(device)).contiguous(memory_format=memory_format)
        outputs.append(model(x).float().cpu())
    return torch.cat(outputs).numpy()


def evaluate_model(
    model,
    images: torch.Tensor,
    labels: np.ndarray,
    classes: list[str],
    spec,
    *,
    batch_size: int = 500,
    device: str = "cpu",
) -> dict:
    """Accuracy report plus throughput (img/s over the whole pass, preprocessing included)."""
    start = time.perf_counter()
    logits = predict_arrays(model, images, spec, batch_size=batch_size, device=device)
    seconds = time.perf_counter() - start
    report = accuracy_report(logits, labels, classes)
    report["seconds"] = round(seconds, 3)
    report["img_s"] = round(len(labels) / seconds, 1)
    return report


def evaluate_image_folder(model, root: Path, spec, *, batch_size: int, device: str, workers: int) -> dict:
    dataset = ImageFolderDataset(root, spec)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    logits, labels = [], []
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            logits.append(model(x.to(device)).float().cpu())
            labels.append(y)
    seconds = time.perf_counter() - start
    report = accuracy_report(torch.cat(logits).numpy(), torch.cat(labels).numpy(), dataset.classes)
    report["seconds"] = round(seconds, 3)
    report["img_s"] = round(report["n"] / seconds, 1)
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m resnets.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        help="CIFAR-10 (ImageFolder tree or official pickles) or an ImageFolder for ImageNet nets",
    )
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--arch", help="architecture, required only for a bare state_dict")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="decoding workers for ImageFolder data")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (CIFAR)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model, ckpt = load_checkpoint(args.checkpoint, args.arch)
        model.to(args.device).to(memory_format=torch.channels_last)
        spec = arch_spec(ckpt["arch"]).dataset
        if spec.name == "cifar10":
            data = load_cifar10(args.data_dir, args.split)
            images, labels = data.images, data.labels
            if args.limit:
                images, labels = images[: args.limit], labels[: args.limit]
            report = evaluate_model(
                model,
                to_tensor_nchw(images),
                labels,
                data.classes,
                spec,
                batch_size=args.batch_size,
                device=args.device,
            )
        else:
            root = args.data_dir / args.split if (args.data_dir / args.split).is_dir() else args.data_dir
            report = evaluate_image_folder(
                model, root, spec, batch_size=args.batch_size, device=args.device, workers=args.workers
            )
    except (CheckpointError, DataLayoutError, ImageError) as exc:
        log.error("%s", exc)
        return 2
    report = {"arch": ckpt["arch"], "checkpoint": str(args.checkpoint), "split": args.split, **report}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['arch']} on {args.data_dir} [{args.split}], {report['n']} images")
        print(f"  top-1 {report['top1']:.2f}%   top-5 {report['top5']:.2f}%   {report['img_s']:.0f} img/s")
        for name, acc in report["per_class"].items():
            print(f"  {name:>12s} {acc:6.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
